"README.md is written by hand (nbdev-readme needs Quarto); it must give the same commands as the home page."
import json, re
from pathlib import Path

root = Path(__file__).parents[1]

def _sh_blocks(text:str) -> list: return [b.strip() for b in re.findall(r'```sh\n(.*?)```', text, re.S)]

def test_readme_gives_the_home_pages_commands():
    nb = json.loads((root/'nbs'/'index.ipynb').read_text())
    index = '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')
    index = re.sub(r'^# ?', '', index, flags=re.M)
    readme = (root/'README.md').read_text()
    assert _sh_blocks(index) and _sh_blocks(readme) == _sh_blocks(index)

def test_ci_runs_the_readmes_test_command():
    test_cmd = _sh_blocks((root/'README.md').read_text())[1]
    assert test_cmd in (root/'.ci'/'run').read_text()
