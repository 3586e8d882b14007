"""Tests for template parsing (AST allow-list) and the sandboxed trial run."""

import numpy as np
import pytest

from selfalign_core.features import FEATURE_NAMES
from selfalign_reward.sandbox import (
    compile_reward,
    restricted_globals,
    sample_features,
    validate_template,
)
from selfalign_reward.template import (
    load_reference_template,
    ParamSpec,
    parse_template,
    reference_template_source,
    TemplateError,
)

HEADER = """PARAMETERS = [
    {'name': 'w', 'init': 1.0, 'lower': 0.1, 'upper': 10.0, 'scale': 'log', 'meaning': 'weight'},
]
"""


def make(body: str) -> str:
    """A template with one parameter 'w' and the given reward body (4-space indented lines)."""
    lines = '\n'.join('    ' + ln for ln in body.strip('\n').splitlines())
    return HEADER + '\n\ndef reward(f, p):\n' + lines + '\n'


GOOD = make("""
d = f['ee_block_dist']
reach = -p['w'] * d
touch = 1.0 * (f['contact_force'] > 0.1)
total = reach + touch
return total, {'reach': reach, 'touch': touch}
""")


@pytest.mark.parametrize('task', ['touch', 'push', 'grasp_lift'])
def test_reference_templates_parse_with_paper_initial_values(task):
    t = load_reference_template(task)
    assert t.sha256 and len(t.sha256) == 64
    assert all(isinstance(s, ParamSpec) and s.lower <= s.init <= s.upper for s in t.params)
    if task == 'touch':
        assert t.spec('force_threshold').init == 1.0
    if task == 'push':
        assert t.spec('w_push').init == 2.0
    assert 'def reward(f, p)' in reference_template_source(task)


def test_good_template_parses_and_computes():
    t = parse_template(GOOD)
    assert t.param_names == ('w',)
    assert t.initial_theta() == {'w': 1.0}
    fn = compile_reward(t)
    from selfalign_core.features import unpack
    f = unpack(sample_features(8))
    total, terms = fn(f, {'w': 2.0})
    np.testing.assert_allclose(total, -2.0 * f['ee_block_dist'] + (f['contact_force'] > 0.1))
    assert set(terms) == {'reach', 'touch'}


# (source, words the error must contain) — each one is rejected by the static parser.
HOSTILE_STATIC = [
    ('import os\n' + GOOD, 'imports are not allowed'),
    ('from os import system\n' + GOOD, 'imports are not allowed'),
    (make("import os\nreturn f['contact_force'], {}"), 'imports are not allowed'),
    (make("x = f['contact_force'].__class__\nreturn x, {}"), 'attributes starting with _'),
    (make('x = ().__class__.__bases__[0].__subclasses__()\nreturn x, {}'),
     'attributes starting with _'),
    (make("x = open('/etc/passwd')\nreturn x, {}"), "calling 'open' is not allowed"),
    (make("x = eval('1')\nreturn x, {}"), "calling 'eval' is not allowed"),
    (make("exec('x = 1')\nreturn 0, {}"), "calling 'exec' is not allowed"),
    (make("g = getattr(np, 'load')\nreturn g, {}"), "calling 'getattr' is not allowed"),
    (make("x = __import__('os')\nreturn x, {}"), 'not allowed'),
    (make('x = globals()\nreturn x, {}'), "calling 'globals' is not allowed"),
    (make("x = print('hi')\nreturn x, {}"), "calling 'print' is not allowed"),
    (make('while True:\n    pass\nreturn 0, {}'), 'while loops are not allowed'),
    (make('for i in range(10**12):\n    pass\nreturn 0, {}'), 'for loops are not allowed'),
    (make('x = np.ones(10**11)\nreturn x, {}'), 'np.ones is not an allowed numpy function'),
    (make("x = np.load('a.npy')\nreturn x, {}"), 'np.load is not an allowed numpy function'),
    (make("x = f['contact_force'].astype(float)\nreturn x, {}"), 'attribute access .astype'),
    (make("x = f['gripper_force']\nreturn x, {}"), "unknown feature f['gripper_force']"),
    (make("x = p['w2']\nreturn x, {}"), "unknown parameter p['w2']"),
    (make("k = 'contact_force'\nx = f[k]\nreturn x, {}"), 'indexed with a string constant'),
    (make("g = f\nreturn g['contact_force'], {}"), 'may only be indexed'),
    (make('g = lambda: 1\nreturn g, {}'), 'lambda is not allowed'),
    (make('x = [1 for _ in f]\nreturn x, {}'), 'comprehensions are not allowed'),
    (make('global y\nreturn 0, {}'), 'global/nonlocal'),
    (make('try:\n    x = 1\nexcept Exception:\n    x = 2\nreturn x, {}'), 'try/except'),
    (make("with open('x') as h:\n    pass\nreturn 0, {}"), 'with statements'),
    (make('def g():\n    return 1\nreturn g(), {}'), 'nested function'),
    (make('return undefined_name, {}'), "unknown name 'undefined_name'"),
    (make('np = 1\nreturn np, {}'), "the name 'np' cannot be assigned"),
    (make("x = f['contact_force']\nreturn x, {}").replace('def reward(f, p)', 'def reward(f)'),
     'signature must be exactly'),
    (GOOD.replace("'init': 1.0", "'init': 20.0"), 'init 20.0 is outside [0.1, 10.0]'),
    (GOOD.replace("'lower': 0.1", "'lower': 0.0"), 'scale log needs lower > 0'),
    (GOOD.replace("'lower': 0.1", "'lower': 50.0").replace("'init': 1.0", "'init': 50.0"),
     'is not below upper'),
    (GOOD.replace("'scale': 'log'", "'scale': 'exp'"), "scale 'exp' is not one of"),
    (GOOD.replace("'name': 'w'", "'name': '__w'"), 'is not a valid identifier'),
    (GOOD.replace("'meaning': 'weight'", "'meaning': 'weight', 'extra': 1"), 'unknown keys'),
    (GOOD.replace("'init': 1.0", "'init': abs(-1.0)"), 'PARAMETERS must be a literal'),
    (GOOD.split('\n\ndef reward')[0], 'def reward(f, p) is missing'),
    ('def reward(f, p):\n    return 0, {}\n', 'PARAMETERS is missing'),
    (HEADER + HEADER + '\ndef reward(f, p):\n    return 0, {}\n', 'PARAMETERS is defined twice'),
    (GOOD + '\nx = 1\n', 'top-level Assign statement is not allowed'),
    (make('return 0, {}\n  oops'), 'syntax error'),
    ('', 'the template is empty'),
    (make('x = 1'), 'no return statement'),
    (make('z = 0.0' + ' + 0.0' * 1500 + '\nreturn z, {}'), 'syntax nodes (limit 4000)'),
    (make('z = 0.0' + ' + 0.0' * 120 + '\nreturn z, {}'), 'levels deep (limit 100)'),
    (make('z = ' + '-' * 150 + '1.0\nreturn z, {}'), 'levels deep'),
]


@pytest.mark.parametrize('source,words', HOSTILE_STATIC, ids=[w for _, w in HOSTILE_STATIC])
def test_hostile_or_broken_templates_rejected_statically(source, words):
    with pytest.raises(TemplateError) as info:
        parse_template(source)
    msg = str(info.value)
    assert words in msg
    assert 'Fix:' in msg  # every error tells the LLM what to do


def test_error_names_the_line():
    src = make("a = f['contact_force']\nb = open('x')\nreturn a, {}")
    with pytest.raises(TemplateError) as info:
        parse_template(src)
    expected = src.splitlines().index("    b = open('x')") + 1
    assert info.value.line == expected
    assert str(info.value).startswith(f'line {expected}:')


def test_unknown_feature_error_lists_vocabulary():
    with pytest.raises(TemplateError) as info:
        parse_template(make("return f['force'], {}"))
    assert all(n in info.value.fix for n in FEATURE_NAMES)


def test_restricted_globals_expose_only_allow_list():
    g = restricted_globals()
    assert set(g['__builtins__']) == {'abs', 'min', 'max', 'float', 'int', 'bool', 'round'}
    assert hasattr(g['np'], 'clip') and hasattr(g['np'].linalg, 'norm')
    assert not hasattr(g['np'], 'load') and not hasattr(g['np'], 'ones')


def test_validate_accepts_reference_template():
    t = validate_template(reference_template_source('touch'))
    assert t.spec('force_threshold').init == 1.0


# Templates that pass the static rules but fail when run; the trial run must catch each.
HOSTILE_RUNTIME = [
    # metered: ints become floats (no 10**10**9 big integer), no arithmetic on strings
    (make("x = 10 ** 10 ** 9\nreturn f['contact_force'] * 0 + x, {}"), 'raised OverflowError'),
    (make("s = 'x' * 10 ** 11\nreturn f['contact_force'], {}"),
     'arithmetic on str is not allowed'),
    (make("x = f['contact_force']\ny = x[:, None] * x\nreturn x, {}"),
     'would build an array of shape (256, 256)'),
    (make("x = f['contact_force']\nif p['w'] > 2.0 and p['w'] < 5.0:\n"
          "    x = np.sum(x[:, None] * x, axis=1)\nreturn x, {}"),
     'at random parameters inside their ranges'),
    (make("x = f['contact_force']\ny = np.ones_like(x, shape=(10 ** 9,))\nreturn x, {}"),
     "keyword argument(s) ['shape'] are not allowed"),
    (make("a = f['ee_pos'] + 1.0\n" + 'a = a + a\n' * 100
          + 'return np.sum(a, axis=-1), {}'),
     'array elements in one evaluation'),
    (make("x = np.log(f['contact_force'] * 0)\nreturn x, {'x': x}"), 'NaN or infinite'),
    (make("x = f['contact_force'] / (f['contact_force'] * 0)\nreturn x, {}"), 'NaN or infinite'),
    (make("x = f['ee_pos']\nreturn x, {}"), 'total has shape (256, 3)'),
    (make('return 1.0, {}'), 'total has shape ()'),
    (make("return f['contact_force']"), 'expected a tuple (total, terms)'),
    (make("x = f['contact_force']\nreturn x, [x]"), 'expected a dict of named terms'),
    (make("x = f['contact_force']\nreturn x, {'t': f['ee_pos']}"), "term 't' has shape"),
    (make("x = f['ee_pos'][:, 7]\nreturn x, {}"), 'raised IndexError'),
    (make("x = f['contact_force'] / (p['w'] - 0.1)\nreturn x, {}"),
     'with every parameter at its lower bound'),
    (make("x = np.clip(f['ee_block_dist'], 0.0, 1.0, out=f['ee_block_dist'])\nreturn x, {}"),
     "keyword argument(s) ['out'] are not allowed"),
]


@pytest.mark.parametrize('source,words', HOSTILE_RUNTIME, ids=[w for _, w in HOSTILE_RUNTIME])
def test_hostile_templates_rejected_by_trial_run(source, words):
    parse_template(source)  # statically fine
    with pytest.raises(TemplateError) as info:
        validate_template(source, cpu_time_s=1.0, memory_mb=768)
    assert words in str(info.value)
    assert 'Fix:' in str(info.value)
