# ruff: noqa: F821
"""A touch reward an LLM might write with a stand-off approach (benchmarks/paper_table.py
'standoff' set-up; not a shipped template).

The approach term pays most when the nearer finger pad is ``approach_offset`` from the block
surface (5 cm: "approach to a pre-touch pose"), and the touch term pays only above
``force_threshold`` — 40 N, above every contact force a touch produces in the PyBullet scene
(17-27 N, docs/tasks.md). So under the initial θ nothing pays for the last 5 cm: closing them
costs approach reward and the touch bonus never fires. This is the paper's touch mistake in a
form this simulator cannot learn around (with the shipped template the approach term alone
brings the fingers onto the block). Lowering the threshold below the touch forces, or the
offset to 0, makes the touch pay.
"""

PARAMETERS = [
    {'name': 'w_reach', 'init': 1.0, 'lower': 0.1, 'upper': 10.0, 'scale': 'log',
     'meaning': 'weight of the approach term'},
    {'name': 'reach_sharpness', 'init': 10.0, 'lower': 1.0, 'upper': 50.0, 'scale': 'log',
     'meaning': 'how sharply the approach reward rises near its target distance, 1/m'},
    {'name': 'approach_offset', 'init': 0.05, 'lower': 0.0, 'upper': 0.1, 'scale': 'linear',
     'meaning': 'finger-to-block-surface distance the approach term aims for, m (0: touching)'},
    {'name': 'w_touch', 'init': 2.0, 'lower': 0.1, 'upper': 20.0, 'scale': 'log',
     'meaning': 'bonus per step with a finger touching the block'},
    {'name': 'force_threshold', 'init': 40.0, 'lower': 0.01, 'upper': 100.0, 'scale': 'log',
     'meaning': 'contact force counted as a touch, N'},
]


def reward(f, p):
    dist = np.abs(f['ee_block_dist'] - p['approach_offset'])
    reach = p['w_reach'] * (1.0 - np.tanh(p['reach_sharpness'] * dist))
    touch = p['w_touch'] * (f['contact_force'] > p['force_threshold'])
    total = reach + touch
    return total, {'reach': reach, 'touch': touch}
