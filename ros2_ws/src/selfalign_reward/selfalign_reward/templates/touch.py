# ruff: noqa: F821
"""Reference reward template for 'touch' (source format; parsed by selfalign_reward.template).

Reproduces the paper's initial mistake: the contact force threshold starts at 1 N, far above the
0.1 N a light touch produces on a real arm, so the touch term rarely fires until self-alignment
lowers it. In the PyBullet scene a touch by the position-controlled Panda presses with 17-27 N
(docs/tasks.md), so 1 N does not block there; the range reaches 100 N so that a threshold above
those forces (benchmarks/paper_table.py's 'above' set-up, 40 N) can be studied.
"""

PARAMETERS = [
    {'name': 'w_reach', 'init': 1.0, 'lower': 0.1, 'upper': 10.0, 'scale': 'log',
     'meaning': 'weight of the approach term (per metre of finger-to-block distance)'},
    {'name': 'reach_sharpness', 'init': 10.0, 'lower': 1.0, 'upper': 50.0, 'scale': 'log',
     'meaning': 'how sharply the approach reward rises near the block, 1/m'},
    {'name': 'w_touch', 'init': 2.0, 'lower': 0.1, 'upper': 20.0, 'scale': 'log',
     'meaning': 'bonus per step with a finger touching the block'},
    {'name': 'force_threshold', 'init': 1.0, 'lower': 0.01, 'upper': 100.0, 'scale': 'log',
     'meaning': 'contact force counted as a touch, N'},
]


def reward(f, p):
    dist = f['ee_block_dist']
    reach = p['w_reach'] * (1.0 - np.tanh(p['reach_sharpness'] * dist))
    touch = p['w_touch'] * (f['contact_force'] > p['force_threshold'])
    total = reach + touch
    return total, {'reach': reach, 'touch': touch}
