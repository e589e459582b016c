"Bad inputs to the data layer: each gets a clear error naming what is wrong, or a warning naming what was skipped."
import os, re, shutil, warnings
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from conftest import write_image
from xray_fastai.core import atomic_write
from xray_fastai.images import load_xray, XrayDataError, UnreadableImageWarning
from xray_fastai.items import xray_items
from xray_fastai.data import xray_dataloaders, xray_cache

def _add_bad(root, name, content):
    p = root/'train'/'PNEUMONIA'/name
    p.write_bytes(content)
    return p

def test_clean_folder_reads_without_warnings(kaggle_dir):
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        df = xray_items(kaggle_dir)
    assert len(df) == 56
    assert df.groupby('split').multiclass.value_counts().to_dict()[('train', 'VIRUS')] == 8

@pytest.mark.parametrize('name,content', [
    ('person90_bacteria_90.jpeg', b''),                      # zero bytes
    ('person91_bacteria_91.jpeg', b'this is not a jpeg'),    # not an image, image suffix
])
def test_unreadable_file_is_skipped_with_a_warning_naming_it(kaggle_dir, name, content):
    _add_bad(kaggle_dir, name, content)
    with pytest.warns(UnreadableImageWarning, match=name) as rec:
        df = xray_items(kaggle_dir, max_bad=0.5)
    assert 'skipped 1 unreadable' in str(rec[0].message)
    assert len(df) == 56 and not df.path.str.contains(name).any()

def test_truncated_image_is_skipped_with_a_warning(kaggle_dir):
    good = write_image(kaggle_dir/'tmp.jpeg', size=(64, 64))
    data = good.read_bytes(); good.unlink()
    _add_bad(kaggle_dir, 'person92_virus_92.jpeg', data[:len(data)//2])
    with pytest.warns(UnreadableImageWarning, match='person92_virus_92.jpeg'):
        df = xray_items(kaggle_dir, max_bad=0.5)
    assert len(df) == 56

def test_non_image_file_is_reported_and_hidden_files_ignored(kaggle_dir):
    (kaggle_dir/'train'/'NORMAL'/'notes.txt').write_text('radiologist notes')
    (kaggle_dir/'train'/'NORMAL'/'.DS_Store').write_bytes(b'\0\1')
    (kaggle_dir/'train'/'NORMAL'/'._IM-0001-0001.jpeg').write_bytes(b'')
    with pytest.warns(UnreadableImageWarning, match='notes.txt') as rec:
        df = xray_items(kaggle_dir)
    assert len(rec) == 1 and '.DS_Store' not in str(rec[0].message)
    assert len(df) == 56

def test_empty_class_folder_is_an_error(kaggle_dir):
    shutil.rmtree(kaggle_dir/'test'/'NORMAL'); (kaggle_dir/'test'/'NORMAL').mkdir()
    with pytest.raises(XrayDataError, match=r"test/NORMAL.*holds no images"): xray_items(kaggle_dir)

def test_missing_class_folder_is_an_error(kaggle_dir):
    shutil.rmtree(kaggle_dir/'train'/'PNEUMONIA')
    with pytest.raises(XrayDataError, match=r"train: no PNEUMONIA/ folder"): xray_items(kaggle_dir)

def test_a_class_whose_images_are_all_unreadable_is_an_error(tmp_path):
    root = tmp_path/'flat'
    for i in range(30): write_image(root/'NORMAL'/f'IM-{i:04d}-0001.jpeg', seed=i)
    (root/'PNEUMONIA').mkdir()
    (root/'PNEUMONIA'/'person1_virus_1.jpeg').write_bytes(b'')
    with pytest.warns(UnreadableImageWarning), pytest.raises(XrayDataError, match="none of the 1 'PNEUMONIA' images"):
        xray_items(root)

def test_many_unreadable_images_are_an_error(kaggle_dir):
    for i in range(10): _add_bad(kaggle_dir, f'person{300+i}_bacteria_{i}.jpeg', b'')
    with pytest.warns(UnreadableImageWarning), pytest.raises(XrayDataError, match='more than max_bad=5%'):
        xray_items(kaggle_dir)

def test_folder_in_no_known_layout_is_an_error(tmp_path):
    for i in range(3): write_image(tmp_path/'scans'/'cats'/f'{i}.jpeg')
    with pytest.raises(XrayDataError, match=r"not a chest X-ray folder.*Expected Kaggle's layout.*Found: cats"):
        xray_items(tmp_path/'scans')

def test_missing_source_is_an_error(tmp_path):
    with pytest.raises(XrayDataError, match='no such file or folder'): xray_items(tmp_path/'nowhere')

def test_csv_with_unknown_label_names_label_and_row(kaggle_dir, tmp_path):
    csv = tmp_path/'list.csv'
    pd.DataFrame(dict(path=[str(kaggle_dir/'train'/'NORMAL'/'IM-0000-0001.jpeg')]*2, label=['NORMAL', 'COVID'])).to_csv(csv, index=False)
    with pytest.raises(XrayDataError, match=r"unknown label\(s\) \['COVID'\] in row\(s\) \[3\]"): xray_items(csv)

def test_csv_with_missing_files_names_them(kaggle_dir, tmp_path):
    csv = tmp_path/'list.csv'
    csv.write_text('path,label\nchest_xray/train/NORMAL/IM-0000-0001.jpeg,NORMAL\nmissing/IM-9999-0001.jpeg,NORMAL\n')
    with pytest.raises(XrayDataError, match=r"1 listed file\(s\) do not exist: .*IM-9999-0001.jpeg"): xray_items(csv)

def test_csv_without_the_columns_is_an_error(tmp_path):
    csv = tmp_path/'list.csv'; csv.write_text('file,class\na.jpeg,NORMAL\n')
    with pytest.raises(XrayDataError, match='needs columns path,label'): xray_items(csv)

@pytest.mark.parametrize('text,msg', [
    ('path,label,split\n{f},NORMAL,holdout\n', r"unknown split\(s\) \['holdout'\] in row\(s\) \[2\]"),
    ('path,label\n{f},NORMAL,test\n', r"line\(s\) \[2\] have another number of cells than the header \(2\)"),
    ('path,label\n\n{f}\n', r"line\(s\) \[3\] have another number of cells"),
    ('path,Path,label\n{f},{f},NORMAL\n', 'repeated column names in the header'),
    ('\n\n', 'an empty CSV'),
    ('path,label\n', 'the CSV lists no images'),
    ('path,label\n{f},NORMAL\udcff\n', 'not a readable CSV'),  # not UTF-8: byte 0xff
])
def test_malformed_csv_says_where(kaggle_dir, tmp_path, text, msg):
    csv = tmp_path/'list.csv'
    csv.write_bytes(text.format(f=kaggle_dir/'train'/'NORMAL'/'IM-0000-0001.jpeg').encode('utf-8', 'surrogateescape'))
    with pytest.raises(XrayDataError, match=msg): xray_items(csv)

def test_csv_from_a_spreadsheet(kaggle_dir):
    "Excel writes a byte-order mark and may pad cells with spaces"
    csv = kaggle_dir.parent/'list.csv'
    csv.write_text('\ufeffPath , Label,Split\r\nchest_xray/train/NORMAL/IM-0000-0001.jpeg , normal , Test\r\n', encoding='utf-8')
    df = xray_items(csv)
    assert df[['binary', 'split']].values.tolist() == [['NORMAL', 'test']]

def test_csv_paths_are_relative_to_the_csv(kaggle_dir):
    csv = kaggle_dir.parent/'list.csv'
    csv.write_text('path,label\nchest_xray/train/NORMAL/IM-0000-0001.jpeg,normal\nchest_xray/train/PNEUMONIA/person1_bacteria_1.jpeg,pneumonia\n')
    df = xray_items(csv)
    assert df.multiclass.tolist() == ['NORMAL', 'BACTERIA'] and df.split.tolist() == ['train', 'train']

def test_multiclass_needs_a_type_in_the_file_name(tmp_path):
    root = tmp_path/'flat'
    for i in range(10):
        write_image(root/'NORMAL'/f'IM-{i:04d}-0001.jpeg', seed=i)
        write_image(root/'PNEUMONIA'/f'scan{i}.jpeg', seed=50+i)
    with pytest.raises(XrayDataError, match='no bacteria/virus in the name of .*scan'):
        xray_dataloaders(root, task='multiclass', size=32, bs=4, cache=False)

def test_bad_options_are_errors(kaggle_dir):
    for kw, msg in [(dict(split='random'), 'split must be one of'), (dict(balance='smote'), 'balance must be one of'),
                    (dict(aug='heavy'), 'aug must be one of'), (dict(task='segmentation'), 'task must be one of')]:
        with pytest.raises(XrayDataError, match=msg): xray_dataloaders(kaggle_dir, size=32, bs=4, cache=False, **kw)

def test_load_xray_names_the_file(tmp_path):
    p = tmp_path/'broken.png'; p.write_bytes(b'\x89PNG\r\n\x1a\n garbage')
    with pytest.raises(XrayDataError, match='broken.png: not a readable image'): load_xray(p)

def test_download_without_kagglehub_says_how_to_install(monkeypatch):
    import sys
    from xray_fastai.data import download
    monkeypatch.setitem(sys.modules, 'kagglehub', None)
    with pytest.raises(ImportError, match=r'pip install "xray-fastai\[kaggle\]"'): download()

def test_download_offline_gives_a_clear_error(monkeypatch):
    import sys, types
    from xray_fastai.data import download
    def offline(handle): raise ConnectionError('Failed to resolve host')
    monkeypatch.setitem(sys.modules, 'kagglehub', types.SimpleNamespace(dataset_download=offline))
    with pytest.raises(RuntimeError, match=r'could not download paultimothymooney/chest-xray-pneumonia.*network connection.*credentials'):
        download()

def _csv(tmp_path, rows, name='list.csv'):
    pd.DataFrame(rows, columns=['path', 'label', 'split']).to_csv(tmp_path/name, index=False)
    return tmp_path/name

@pytest.mark.parametrize('second,where', [
    (('{a}', 'NORMAL', 'train'), 'line 2 (train, NORMAL) and line 4 (train, NORMAL)'),       # counted twice
    (('{a}', 'PNEUMONIA', 'train'), 'line 2 (train, NORMAL) and line 4 (train, PNEUMONIA)'),  # two labels
    (('{a}', 'NORMAL', 'test'), 'line 2 (train, NORMAL) and line 4 (test, NORMAL)'),          # a leak into the test score
    (('./{a}', 'NORMAL', 'test'), 'line 2 (train, NORMAL) and line 4 (test, NORMAL)'),        # another spelling of the path
    (('{abs}', 'PNEUMONIA', 'val'), 'line 2 (train, NORMAL) and line 4 (val, PNEUMONIA)'),    # absolute path
])
def test_an_image_listed_twice_is_an_error_naming_the_lines(kaggle_dir, tmp_path, second, where):
    a = kaggle_dir/'train'/'NORMAL'/'IM-0000-0001.jpeg'
    rel = os.path.relpath(a, tmp_path)
    rows = [(rel, 'NORMAL', 'train'), (os.path.relpath(kaggle_dir/'test'/'NORMAL'/'IM-0001-0001.jpeg', tmp_path), 'NORMAL', 'test'),
            tuple(c.format(a=rel, abs=a) for c in second)]
    with pytest.raises(XrayDataError, match='1 image\\(s\\) listed more than once') as e: xray_items(_csv(tmp_path, rows))
    assert where in str(e.value) and 'IM-0000-0001.jpeg' in str(e.value)

def test_an_image_linked_into_test_is_an_error(kaggle_dir):
    link = kaggle_dir/'test'/'NORMAL'/'IM-0099-0001.jpeg'
    link.symlink_to(kaggle_dir/'train'/'NORMAL'/'IM-0000-0001.jpeg')
    with pytest.raises(XrayDataError, match='listed more than once') as e: xray_items(kaggle_dir)
    assert 'IM-0099-0001.jpeg (test, NORMAL)' in str(e.value) and 'IM-0000-0001.jpeg (train, NORMAL)' in str(e.value)

@pytest.mark.parametrize('folder,twin', [('train/NORMAL', 'train/normal'), ('train/PNEUMONIA', 'train/Pneumonia'), ('test', 'TEST')])
def test_folders_that_differ_only_in_case_are_an_error(kaggle_dir, folder, twin):
    shutil.copytree(kaggle_dir/folder, kaggle_dir/twin)
    first, second = sorted([Path(folder).name, Path(twin).name])
    with pytest.raises(XrayDataError, match=f"folders {first}/ and {second}/ differ only in case"):
        xray_items(kaggle_dir)

@pytest.mark.parametrize('damage', [
    lambda fn: fn.write_bytes(fn.read_bytes()[:200]),                              # truncated
    lambda fn: fn.write_bytes(b'junk'),                                              # not a .npy
    lambda fn: np.save(fn, np.zeros((2, 1, 16, 16), dtype=np.uint8)),                # another shape
    lambda fn: np.save(fn, np.zeros((3, 1, 16, 16), dtype=np.float32)),              # another type
])
def test_a_damaged_cache_is_rebuilt_with_a_warning(kaggle_dir, tmp_path, damage):
    paths = sorted((kaggle_dir/'train'/'NORMAL').iterdir())[:3]
    good = xray_cache(paths, 16, folder=tmp_path, progress=False)
    fn, = tmp_path.glob('*.npy')
    damage(fn)
    with pytest.warns(UserWarning, match='damaged tensor cache'): again = xray_cache(paths, 16, folder=tmp_path, progress=False)
    assert torch.equal(again, good) and torch.equal(xray_cache(paths, 16, folder=tmp_path, progress=False), good)

def test_file_names_that_are_not_utf8_are_cached(tmp_path):
    fn = write_image(tmp_path/os.fsdecode(b'caf\xe9.jpeg'))
    assert xray_cache([fn], 16, folder=tmp_path/'cache', progress=False).shape == (1, 1, 16, 16)

@pytest.mark.parametrize('umask', [0o022, 0o027, 0o077, 0o002])
def test_written_files_get_the_umask_permissions(tmp_path, umask):
    "atomic_write's temporary file is private (0600); the result gets what a plain open() would give"
    old = os.umask(umask)
    try: atomic_write(tmp_path/'a.txt', lambda tmp: Path(tmp).write_text('x'))
    finally: os.umask(old)
    assert (tmp_path/'a.txt').stat().st_mode & 0o777 == 0o666 & ~umask

@pytest.mark.parametrize('rows,msg', [
    ([(f'test/NORMAL/IM-{i:04d}-0001.jpeg', 'NORMAL', 'test') for i in range(4)],
     'no images to train on: all 4 are in the test split'),
    ([(f'train/NORMAL/IM-{i:04d}-0001.jpeg', 'NORMAL', 'train') for i in range(12)], 'PNEUMONIA has 0 training and 0 validation'),
    ([(f'train/NORMAL/IM-{i:04d}-0001.jpeg', 'NORMAL', 'train') for i in range(2)] +
     [(f'train/PNEUMONIA/person{i}_bacteria_{i}.jpeg', 'PNEUMONIA', 'train') for i in range(2)], 'too few images to hold out'),
])
def test_data_that_cannot_train_a_classifier_is_an_error(kaggle_dir, rows, msg):
    with pytest.raises(XrayDataError, match=re.escape(msg)):
        xray_dataloaders(_csv(kaggle_dir, rows), size=16, bs=2, cache=False)

def test_tiny_classes_get_the_toolkits_warning_not_scikit_learns():
    "A class with fewer fitting images than the split's folds: one `SmallDataWarning` saying what to do, never scikit-learn's raw 'least populated class'"
    import warnings
    from xray_fastai.items import patient_split, SmallDataWarning
    df = pd.DataFrame(dict(split='train', multiclass=['NORMAL']*3 + ['BACTERIA']*10 + ['VIRUS']*10,
                           patient=[f'p{i}' for i in range(23)], is_valid=False))
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        assert patient_split(df).is_valid.any()
    assert [(w.category, 'NORMAL has 3 image(s)' in str(w.message) and '--valid-pct' in str(w.message)) for w in ws] == [(SmallDataWarning, True)]
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        patient_split(df, valid_pct=0.5)  # 2 folds: every class has enough
