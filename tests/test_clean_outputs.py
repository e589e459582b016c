"Stored notebook outputs as readers see them: `tools/clean_outputs.py` and the notebooks it keeps clean"
import json, re, sys
from pathlib import Path

import pytest

root = Path(__file__).parents[1]
sys.path.insert(0, str(root/'tools'))
from clean_outputs import clean_nb, clean_text, clean_html, replay_cr, unclean_outputs, main

# fastprogress's console output of one epoch, as execnb stores it: every update after a `\r`
_epoch = ('█\repoch     train_loss  valid_loss  accuracy  time    \n'
          '█\r\rEpoch 1/1 : |----------------------------------------| 0.00% [0/4 00:00<?]'
          '\rEpoch 1/1 : |████████████████████--------------------| 50.00% [2/4 00:10<00:10... 1.9052]'
          '\rEpoch 1/1 : |████████████████████████████████████████| 100.00% [4/4 00:22<00:00... 1.5424]'
          '\rEpoch 1/1 :                                                                               \r'
          '\rEpoch 1/1 :                                                                               '
          '\r0         1.399930    1.375562    0.324324  00:25     \n'
          'Better model found at epoch 0 with accuracy value: 0.324.\n'
          '█\r\r |----------------------------------------| 0.00% [0/2 00:00<?]'
          '\r |████████████████████████████████████████| 100.00% [2/2 00:02<00:00... 0.7203]'
          '\r                                                                               \r')
_warning = ('/work/venv/lib/python3.11/site-packages/torch/jit/_script.py:1491: FutureWarning: `torch.jit.script` is '
            'deprecated.\n  warnings.warn(\n'
            '/usr/lib/python3/dist-packages/sklearn/metrics/_ranking.py:469: UndefinedMetricWarning: Only one class.\n'
            '  warnings.warn(\n')

def test_replay_cr_is_what_a_terminal_shows():
    assert replay_cr('abcdef\rxy') == 'xycdef'
    assert replay_cr('50%\r100%\nnext\r\rdone') == '100%\ndone'
    assert replay_cr('windows\r\nline') == 'windows\nline'

def test_progress_staircase_collapses_to_the_training_table():
    assert clean_text(_epoch) == ('epoch     train_loss  valid_loss  accuracy  time\n'
                                  '0         1.399930    1.375562    0.324324  00:25\n')  # fastai's 'Better model found' line goes

def test_warnings_and_machine_paths_go():
    assert clean_text(_warning) == ''
    assert clean_text('before\n' + _warning + 'after\n') == 'before\nafter\n'
    assert clean_text("Path('/work/shared/data/chest_xray')\n") == "Path('path/to/chest_xray')\n"
    assert clean_text('kept in /work/runs/emb_cpu; relative ../shared/data/chest_xray stays\n') == \
        'kept in runs/emb_cpu; relative ../shared/data/chest_xray stays\n'
    assert clean_text('File /home/ann/venv/lib/python3.12/site-packages/fastai/learner.py:12\n') == 'File fastai/learner.py:12\n'
    # a printed line that only mentions a warning's name is not a warning
    assert clean_text('PickleWarning is raised when\n') == 'PickleWarning is raised when\n'

def test_html_progress_bars_go_tables_stay():
    bar = ("<style>\n    /* Turns off some styling */\n    progress {\n        border: none;\n    }\n</style>\n"
           "<div>\n  <progress value='2' class='' max='4' style='width:300px; height:20px;'></progress>\n"
           "  50.00% [2/4 00:01&lt;00:01]\n</div>\n")
    table = '<table border="1"><tr><th>epoch</th></tr><tr><td>0</td></tr></table>'
    assert clean_html(bar).strip() == ''
    assert clean_html(bar + table).strip() == table
    nb = {'cells': [{'cell_type': 'code', 'source': 'learn.fit(1)', 'outputs': [
        {'output_type': 'display_data', 'data': {'text/html': bar.splitlines(True), 'text/plain': ['<IPython.core.display.HTML object>']}},
        {'output_type': 'display_data', 'data': {'text/html': [bar + table], 'text/plain': ['<IPython.core.display.HTML object>']}},
        {'output_type': 'stream', 'name': 'stderr', 'text': _warning.splitlines(True)},
        {'output_type': 'stream', 'name': 'stdout', 'text': _epoch}]}]}
    assert clean_nb(nb)
    outs = nb['cells'][0]['outputs']
    assert [o['output_type'] for o in outs] == ['display_data', 'stream']   # the bar alone and the warning are gone
    assert ''.join(outs[0]['data']['text/html']).strip() == table
    assert outs[1]['text'].startswith('epoch')   # a string stays a string
    assert unclean_outputs(nb) == []
    assert not clean_nb(nb)                       # cleaning twice changes nothing

def test_unclean_outputs_are_reported():
    nb = {'cells': [{'cell_type': 'code', 'outputs': [{'output_type': 'stream', 'name': 'stdout', 'text': _epoch}]}]}
    assert unclean_outputs(nb) != []

def test_check_fails_on_an_unclean_notebook(tmp_path, capsys):
    f = tmp_path/'x.ipynb'
    f.write_text(json.dumps({'cells': [{'cell_type': 'code', 'source': [], 'metadata': {}, 'execution_count': None,
        'outputs': [{'output_type': 'stream', 'name': 'stdout', 'text': _epoch.splitlines(True)}]}],
        'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}))
    before = f.read_text()
    assert main(['--check', str(f)]) == 1 and f.read_text() == before
    assert main([str(f)]) == 0 and f.read_text() != before
    assert main(['--check', str(f)]) == 0

# the pattern the repository's checks flag in stored notebooks: progress bars, library warnings, site-packages paths
_flagged = re.compile(r'\|[█-]{20,}\||(UserWarning|FutureWarning|RuntimeWarning|site-packages)')

@pytest.mark.parametrize('nb', sorted((root/'nbs').glob('*.ipynb')), ids=lambda p: p.name)
def test_stored_notebooks_are_clean(nb):
    "Every stored output is what a reader should see: run `python tools/clean_outputs.py` after executing a notebook"
    d = json.loads(nb.read_text(encoding='utf-8'))
    assert unclean_outputs(d) == []
    outputs = json.dumps([c.get('outputs', []) for c in d['cells']], ensure_ascii=False)
    assert not _flagged.search(outputs)
    assert not clean_nb(d)

def test_home_folders_become_tilde():
    "A cache under a home folder reads as ~/.cache/..., a checkout under /work/ as a relative path"
    assert clean_text('Image cache: /root/.cache/xray_fastai/t.npy\n') == 'Image cache: ~/.cache/xray_fastai/t.npy\n'
    assert clean_text('/home/ann/data/x.png /work/main/nbs\n') == '~/data/x.png main/nbs\n'

def test_hardware_lines_go():
    "`core.hardware()`'s line names the machine a notebook happened to run on: readers see where, not which"
    hw = 'CPU Intel(R) Xeon(R) Processor, 2 cores, 2 torch threads; Python 3.11.7, torch 2.14.1+cu130, fastai 2.8.12, xray_fastai 0.0.1, Linux 6.18.44-fc-v1300'
    assert clean_text(f'3 s of training (6 s in all) on {hw}.\nnext line\n') == '3 s of training (6 s in all) on the machine it ran on.\nnext line\n'

def test_temporary_folders_go():
    assert clean_text('wrote config.json into /tmp/tmpmjmu5yf_/run\n') == 'wrote config.json into run\n'
