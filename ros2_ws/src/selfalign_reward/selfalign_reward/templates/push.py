# ruff: noqa: F821
"""Reference reward template for 'push' (source format; parsed by selfalign_reward.template).

Reproduces the paper's initial mistake: the push term's weight starts at 2.0 against a strong
reach term, so a policy is paid more for waiting behind the block than for moving it to the goal.
The reach term uses the push point (behind the block, opposite the goal), as an LLM reading the
vocabulary would: reaching the nearest face instead pays as much for touching the block's goal
side, and no reward of that shape taught push here (docs/tasks.md).
"""

PARAMETERS = [
    {'name': 'w_push', 'init': 2.0, 'lower': 0.1, 'upper': 50.0, 'scale': 'log',
     'meaning': 'weight of the block-to-goal progress term'},
    {'name': 'goal_sharpness', 'init': 10.0, 'lower': 1.0, 'upper': 50.0, 'scale': 'log',
     'meaning': 'how sharply the push reward rises near the goal, 1/m'},
    {'name': 'w_lift_penalty', 'init': 1.0, 'lower': 0.01, 'upper': 10.0, 'scale': 'log',
     'meaning': 'penalty per step with the block lifted off the table'},
]


def reward(f, p):
    reach = 10.0 * (1.0 - np.tanh(10.0 * f['ee_push_point_dist']))
    push = p['w_push'] * (1.0 - np.tanh(p['goal_sharpness'] * f['block_goal_dist']))
    lifted = -p['w_lift_penalty'] * (f['block_lift'] > 0.02)
    total = reach + push + lifted
    return total, {'reach': reach, 'push': push, 'lifted': lifted}
