# ruff: noqa: F821
"""Reference reward template for 'grasp_lift' (source format; parsed by selfalign_reward.template).
"""

PARAMETERS = [
    {'name': 'w_reach', 'init': 1.0, 'lower': 0.1, 'upper': 10.0, 'scale': 'log',
     'meaning': 'weight of the approach term'},
    {'name': 'grip_force', 'init': 1.0, 'lower': 0.01, 'upper': 5.0, 'scale': 'log',
     'meaning': 'force each finger must exceed to count as a grasp, N'},
    {'name': 'w_grip', 'init': 1.0, 'lower': 0.1, 'upper': 20.0, 'scale': 'log',
     'meaning': 'bonus per step with both fingers gripping'},
    {'name': 'w_lift', 'init': 4.0, 'lower': 0.1, 'upper': 50.0, 'scale': 'log',
     'meaning': 'weight of the lift height term while gripping'},
    {'name': 'lift_target', 'init': 0.05, 'lower': 0.01, 'upper': 0.2, 'scale': 'log',
     'meaning': 'lift height at which the lift term saturates, m'},
]


def reward(f, p):
    reach = p['w_reach'] * (1.0 - np.tanh(10.0 * f['ee_block_dist']))
    grip = 1.0 * (f['both_fingers_contact_force'] > p['grip_force'])
    height = np.clip(f['block_lift'] / p['lift_target'], 0.0, 1.0)
    lift = p['w_lift'] * grip * height
    total = reach + p['w_grip'] * grip + lift
    return total, {'reach': reach, 'grip': p['w_grip'] * grip, 'lift': lift}
