"""
Tests for settings.py: one path for every script's settings, torch-free.

    python -m pytest -q test_settings.py
"""
import glob
import os
import runpy
import subprocess
import sys
from dataclasses import asdict

import pytest

import settings

ROOT = os.path.dirname(os.path.abspath(__file__))
CONFIGS = sorted(glob.glob(os.path.join('config', '*.py'), root_dir=ROOT))


def resolve(*argv):
    return settings.resolve(list(argv))[0]


def test_defaults_then_files_in_order_then_flags(tmp_path):
    base = tmp_path / 'base.py'
    base.write_text("n_layer = 3\nlearning_rate = 1e-3\n")
    child = tmp_path / 'child.py'  # a config built on another, as config/dense_1b_*.py are
    child.write_text("inherit('base.py')\nactivation = 'relu'\n")
    config, sources = settings.resolve([str(child), '--learning_rate=1', '--dataset=shakespeare', '--stop_step=None'])
    assert config['n_layer'] == 3 and config['activation'] == 'relu' and config['dataset'] == 'shakespeare'
    assert config['learning_rate'] == 1.0 and type(config['learning_rate']) is float  # an int is fine for a float
    assert sources['n_layer'] == str(base) and sources['activation'] == str(child)
    assert sources['learning_rate'] == 'flag' and sources['beta1'] == 'default'
    later = tmp_path / 'later.py'
    later.write_text("n_layer = 5\n")
    assert resolve(str(child), str(later))['n_layer'] == 5  # the later file wins


def test_the_quick_start_is_only_what_runs_without_a_config_file(tmp_path):
    """GPTConfig's defaults are what a config does not set: not the quick start's small model."""
    from model import GPTConfig
    config = tmp_path / 'mine.py'
    config.write_text("n_layer = 12\n")
    mine = resolve(str(config))
    assert mine['n_embd'] == GPTConfig.n_embd == 384 and mine['act_checkpointing'] is True
    quick, sources = settings.resolve([])
    assert quick['n_embd'] == 128 and sources['n_embd'] == settings.QUICKSTART
    assert resolve('--n_layer=2')['n_embd'] == 128  # flags alone still build on the quick start


@pytest.mark.parametrize('path', ['config/dense_1b_polynorm.py', 'config/moe_1b7b_polynorm.py'])
def test_the_1b_configs_train_with_activation_checkpointing(path):
    assert resolve(path)['act_checkpointing'] is True


def test_an_equal_value_set_again_is_traced_to_the_file_that_set_it():
    _, sources = settings.resolve(['config/dense_1b_polynorm.py'])
    # dense_recipe.py sets activation = 'polynorm' too; dense_1b_polynorm.py sets it last
    assert sources['activation'] == 'config/dense_1b_polynorm.py'
    assert sources['n_layer'] == 'config/dense_1b.py' and sources['learning_rate'] == 'config/dense_recipe.py'


def test_inherit_reads_from_the_files_own_folder(tmp_path):
    (tmp_path / 'base').mkdir()
    (tmp_path / 'base' / 'root.py').write_text("n_layer = 2\nn_embd = 64\nlearning_rate = 1e-3\n")
    (tmp_path / 'base' / 'mid.py').write_text("inherit('root.py')\nn_embd = 128\n")  # relative to base/
    (tmp_path / 'top.py').write_text("inherit('base/mid.py')\nlearning_rate = 3e-4\n")
    values, _ = settings.read_file(str(tmp_path / 'top.py'))
    assert values == {'n_layer': 2, 'n_embd': 128, 'learning_rate': 3e-4}
    (tmp_path / 'bad.py').write_text("inherit('missing.py')\n")
    with pytest.raises(SystemExit, match=r"bad.py: inherit\('missing.py'\) found no config file"):
        settings.read_file(str(tmp_path / 'bad.py'))


@pytest.mark.parametrize('text, message', [
    ("n_layer = 2\nn_head = (\n", "line 2: '(' was never closed"),
    ("n_layer = 2\nn_head = four\n", "line 2: NameError: name 'four' is not defined"),
    ("n_layer = 1 / 0\n", "line 1: ZeroDivisionError: division by zero"),
])
def test_a_config_file_that_does_not_run_is_one_line_naming_file_and_line(tmp_path, text, message):
    path = tmp_path / 'broken.py'
    path.write_text(text)
    with pytest.raises(SystemExit) as error:
        resolve(str(path))
    assert str(error.value) == f"{path} {message}"


@pytest.mark.parametrize('flag, message', [
    ('--n_layers=3', "--n_layers=3: unknown key 'n_layers'; did you mean --n_layer? (python train.py --help"),
    ('--zzz=1', "--zzz=1: unknown key 'zzz'; (python train.py --help lists every key)"),  # nothing close
    ('--beta=0.9', "unknown key 'beta'; did you mean --beta2 or --beta1? (python"),  # every close key
    ('--n_layer=2.5', "n_layer must be int, got 2.5 (float)"),
    ('--compile=1', "compile must be bool or None, got 1"),
    ('--fsdp=yes', "fsdp must be bool, got 'yes'"),
    ('--learning_rate=fast', "learning_rate must be float, got 'fast'"),
    ('--learning_rate=1e999',
     "learning_rate must be a finite number (float32's range, as the optimizer's math), got inf"),
    ('--min_lr=1e999', "min_lr must be a finite number"),
    ('--learning_rate=1e300', "learning_rate must be a finite number"),
    ('--weight_decay=nan', "weight_decay must be float, got 'nan'"),
    ('--beta2=2.0', "beta2 must be in [0, 1), got 2.0"),
    ('--beta1=-0.1', "beta1 must be in [0, 1), got -0.1"),
    ('--max_steps=None', "max_steps must be int, got None"),
    ('--dtype=float16', "dtype must be one of"),
    ('--max_steps=0', "max_steps must be positive"),
    ('--max_steps', "--max_steps has no value: write --max_steps=VALUE"),
])
def test_bad_flags_say_what_is_wrong_in_one_line(flag, message):
    with pytest.raises(SystemExit) as error:
        resolve(flag)
    assert message in str(error.value) and '\n' not in str(error.value)


def test_flags_take_the_space_form_too():
    config = resolve('--max_steps', '5', '--dataset', 'shakespeare', '--compile=False')
    assert config['max_steps'] == 5 and config['dataset'] == 'shakespeare' and config['compile'] is False


def test_unknown_key_in_a_config_file_names_the_file(tmp_path):
    config = tmp_path / 'typo.py'
    config.write_text("learning_rat = 1e-3\n")
    with pytest.raises(SystemExit, match=f"{config}: unknown key 'learning_rat'"):
        resolve(str(config))
    with pytest.raises(SystemExit, match="config file 'missing.py' not found"):
        resolve('missing.py')


def test_model_defaults_read_from_the_source_are_gptconfigs():
    from model import GPTConfig
    assert {key: default for key, (default, _) in settings.MODEL_KEYS.items()} == asdict(GPTConfig())


def run_train(*args):
    """train.py's command line in a fresh interpreter; also says whether torch was imported."""
    code = ("import runpy, sys\nsys.argv = ['train.py', *sys.argv[1:]]\ntry:\n    runpy.run_path('train.py', "
            "run_name='__main__')\nexcept SystemExit:\n    pass\nprint('torch imported:', 'torch' in sys.modules)")
    return subprocess.run([sys.executable, '-c', code, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_help_gives_every_key_its_meaning_without_importing_torch():
    result = run_train('--help')
    assert result.stdout.rstrip().endswith('torch imported: False'), result.stdout + result.stderr
    for key in settings.DEFAULTS:
        assert f"\n  {key} " in result.stdout and settings.meaning(key), key
    assert "peak learning rate, after warmup" in result.stdout  # a comment of TRAINING
    assert "context length" in result.stdout  # a comment of GPTConfig


def test_print_config_shows_every_key_and_its_source_without_importing_torch():
    result = run_train('config/dense_1b_polynorm.py', '--max_steps=10', '--print_config')
    lines = result.stdout.rstrip().splitlines()
    assert lines[-1] == 'torch imported: False', result.stdout + result.stderr
    assert len(lines) - 1 == len(settings.DEFAULTS)
    assert "act_checkpointing = True  # default" in lines
    assert "n_layer = 24  # config/dense_1b.py" in lines
    assert "activation = 'polynorm'  # config/dense_1b_polynorm.py" in lines
    assert "max_steps = 10  # flag" in lines
    assert "vocab_size = 50304  # config/dense_recipe.py" in lines
    config, _ = settings.resolve(['config/dense_1b_polynorm.py', '--max_steps=10'])
    import ast
    for line in lines[:-1]:  # each value reads back as the Python literal it is
        key, value = line.split(' = ', 1)
        assert ast.literal_eval(value.rsplit('  # ', 1)[0]) == config[key]


@pytest.mark.parametrize('path', CONFIGS)
def test_every_config_resolves_and_means_one_model_everywhere(path, capsys, monkeypatch):
    """train.py, sweep.py, bench.py --model and `python model.py` build a config's model from settings.resolve:
    the same GPTConfig, whatever the script."""
    import argparse

    import bench
    import sweep
    from model import GPTConfig, summary
    config = resolve(path)
    expected = GPTConfig(**{**settings.model_keys(config), 'vocab_size': settings.data_vocab(config)})
    assert settings.model_keys(sweep.read_settings(path, {})) == settings.model_keys(config)
    benched = bench.model_settings(argparse.Namespace(model=path, n_layer=None, block_size=None))
    assert GPTConfig(**settings.model_keys(benched)) == expected
    monkeypatch.setattr(sys, 'argv', ['model.py', path])  # `python model.py CONFIG`, run in this process
    runpy.run_path(os.path.join(ROOT, 'model.py'), run_name='__main__')
    assert summary(expected) in capsys.readouterr().out


def test_train_py_names_every_training_key_on_its_first_screen():
    """train.py's docstring lists the training keys by group: none missing, none that does not exist."""
    with open(os.path.join(ROOT, 'train.py')) as f:
        first_screen = f.read().split('"""')[1]
    listed = first_screen.split('The\ntraining keys, by group:')[1].split('. Exit status')[0]
    names = {name.strip() for group in listed.split('|') for name in group.replace('\n', ' ').split(',')}
    assert names == set(settings.TRAINING)


def test_data_vocab_is_the_prepared_datas_padded_or_gpt2s(tmp_path, monkeypatch):
    config = {'vocab_size': None, 'data_dir': None, 'dataset': 'mydata'}
    monkeypatch.setattr(settings, 'HERE', str(tmp_path))  # data/<dataset> beside the scripts
    assert settings.data_vocab(config) == 50304  # not prepared yet: gpt2's, padded
    os.makedirs(tmp_path / 'data' / 'mydata')
    (tmp_path / 'data' / 'mydata' / 'meta.json').write_text('{"vocab_size": 65}')
    assert settings.data_vocab(config) == 128  # the prepared data's, padded to a multiple of 64
    (tmp_path / 'elsewhere').mkdir()
    (tmp_path / 'elsewhere' / 'meta.json').write_text('{"vocab_size": 256}')
    assert settings.data_vocab({**config, 'data_dir': str(tmp_path / 'elsewhere')}) == 256  # data_dir wins
    assert settings.data_vocab({**config, 'vocab_size': 100}) == 100  # set: taken as it is


def test_model_keys_are_the_models_own_keys_of_a_config():
    config = resolve()
    keys = settings.model_keys(config)
    assert set(keys) == set(settings.MODEL_KEYS) and all(keys[k] == config[k] for k in keys)
    assert settings.model_keys({'n_layer': 3, 'learning_rate': 1.0}) == {'n_layer': 3}


def test_a_config_file_knows_its_own_path_and_float32s_largest_number_is_finite(tmp_path):
    path = tmp_path / 'mine.py'
    path.write_text("out_dir = __file__ + '.out'\nlearning_rate = 3.4028234663852886e38\n")
    config = resolve(str(path))
    assert config['out_dir'] == f"{path}.out" and config['learning_rate'] == settings.FLOAT32_MAX


def test_under_torchrun_a_bad_command_line_waits_for_rank_0_to_say_it():
    # every process fails on the same bad key and rank 0 alone says it; torchrun stops the others as soon as one
    # process exits, so a rank other than 0 that exited at once could get rank 0 stopped before it says anything
    code = "import settings; settings.from_command_line(['--learning_rat=1'], 'train.py', '')"
    child = subprocess.Popen([sys.executable, '-c', code], cwd=ROOT, env={**os.environ, 'RANK': '1'},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):  # still waiting, silent, for torchrun to stop it
            child.wait(timeout=3)
    finally:
        child.terminate()  # as torchrun does once rank 0 has exited with the line
    out, err = child.communicate(timeout=10)
    assert child.returncode != 0 and out == '' and 'learning_rat' not in err
