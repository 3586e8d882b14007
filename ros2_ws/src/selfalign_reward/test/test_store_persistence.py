"""RewardStore persistence: a resumed run keeps code, theta and version."""

import json

from selfalign_reward.store import RewardStore
from selfalign_reward.template import reference_template_source


def test_save_restore_roundtrip_keeps_theta_and_version(tmp_path):
    store = RewardStore()
    assert store.adopt(reference_template_source('push'), 'template:push')[0]
    name = store.state.template.param_names[0]
    spec = store.state.template.spec(name)
    value = (spec.lower + spec.upper) / 2
    assert store.set_params([name], [value])[0]
    store.save(tmp_path / 'reward_state.json')
    again = RewardStore()
    assert again.restore(tmp_path / 'reward_state.json') == (True, '')
    assert again.state.theta == store.state.theta
    assert again.state.version == store.state.version == 1
    assert again.state.template.code == store.state.template.code


def test_restore_refuses_corrupt_or_invalid_files(tmp_path):
    path = tmp_path / 'reward_state.json'
    path.write_text('{not json')
    ok, why = RewardStore().restore(path)
    assert not ok and 'cannot read a saved reward' in why
    path.write_text(json.dumps({'code': 'import os', 'theta': {}, 'version': 3, 'source': 'x'}))
    store = RewardStore()
    ok, why = store.restore(path)
    assert not ok and 'no longer validates' in why and store.state is None
