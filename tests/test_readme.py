"README.md is written by hand (nbdev-readme needs Quarto); it must give the same commands as the home and Develop pages."
import json, re
from pathlib import Path

root = Path(__file__).parents[1]

def _sh_blocks(text:str) -> list: return [b.strip() for b in re.findall(r'```sh\n(.*?)```', text, re.S)]

def _page_text(name:str) -> str:
    nb = json.loads((root/'nbs'/name).read_text())
    return re.sub(r'^# ?', '', '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown'), flags=re.M)

def test_readme_gives_the_home_and_develop_pages_commands():
    "The README holds every command of the home page (install, run) and of the Develop page (test, build the pages), and no other"
    pages = _sh_blocks(_page_text('index.ipynb')) + _sh_blocks(_page_text('developing.ipynb'))
    readme = _sh_blocks((root/'README.md').read_text())
    assert pages and sorted(readme) == sorted(pages)

def test_ci_runs_the_readmes_test_command():
    test_cmd = _sh_blocks((root/'README.md').read_text())[1]
    assert test_cmd in (root/'.ci'/'run').read_text()
