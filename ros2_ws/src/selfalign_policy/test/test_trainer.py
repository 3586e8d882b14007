"""Training loop on the real PyBullet env: episodes, callbacks, exact resume from a checkpoint."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import selfalign_bringup.sim  # noqa: F401  (registers SelfAlign/* envs; tests may import up)
from selfalign_core import features, tasks
from selfalign_core.features import FEATURE_DIM
from selfalign_policy.checkpoint import load_checkpoint
from selfalign_policy.config import DrQV2Config
from selfalign_policy.trainer import Callbacks, CHECKPOINT_NAME, EpisodeAbortedError, Trainer

CFG = {'agent': {'batch_size': 8, 'hidden_dim': 32, 'feature_dim': 16, 'num_expl_steps': 60},
       'replay': {'capacity': 2000},
       'trainer': {'seed': 3, 'eval_every_steps': 0, 'progress': False}}


def oracle(x: np.ndarray) -> np.ndarray:
    return tasks.oracle_reward('touch', features.unpack(x))


def _params(tr: Trainer) -> list[torch.Tensor]:
    mods = (tr.agent.actor, tr.agent.critic, tr.agent.critic_target)
    return [p.detach().clone() for m in mods for p in m.parameters()]


@pytest.fixture
def env():
    e = gym.make('SelfAlign/Touch-v0')
    try:
        yield e
    finally:
        e.close()


def test_resume_from_checkpoint_continues_the_same_run(env, tmp_path):
    cfg = DrQV2Config.from_dict(CFG)
    a = Trainer(env, cfg, oracle, task='touch')
    a.train(200)
    path = a.save(tmp_path / CHECKPOINT_NAME)
    assert not (tmp_path / (CHECKPOINT_NAME + '.tmp')).exists()  # written atomically
    a.train(400)
    env_b = gym.make('SelfAlign/Touch-v0')
    try:
        b = Trainer(env_b, cfg, oracle, task='touch')
        b.load(path)
        assert b.env_step == 200
        b.train(400)
    finally:
        env_b.close()
    assert a.update_count == b.update_count > 50
    assert a.last_metrics == b.last_metrics
    for pa, pb in zip(_params(a), _params(b)):
        assert torch.equal(pa, pb)
    state = load_checkpoint(path, restore_rng=False)
    assert state['counters']['env_step'] == 200 and 'numpy' in state['rng_states']


def test_episodes_callbacks_and_evaluation(env):
    got, evals, updates = [], [], []
    cfg = DrQV2Config.from_dict({**CFG, 'trainer': {**CFG['trainer'], 'eval_every_steps': 100,
                                                   'eval_episodes': 1}})
    tr = Trainer(env, cfg, oracle, task='touch',
                 callbacks=Callbacks(on_episode_end=got.append, on_eval=evals.append,
                                     on_update=lambda s, m: updates.append(s)))
    tr.train(100)
    train_eps = [e for e in got if not e.evaluation]
    assert len(train_eps) == 1 and len(evals) == 1 and len([e for e in got if e.evaluation]) == 1
    ep = train_eps[0]
    assert ep.features.shape == (100, FEATURE_DIM) and ep.actions.shape == (100, 4)
    assert np.allclose(ep.rewards, oracle(ep.features))
    assert ep.success_flags.dtype == bool and ep.env_step == 100 and ep.task == 'touch'
    assert np.isfinite(ep.block_rest_z)
    assert set(ep.record_fields()) >= {'features', 'rewards', 'reward_version', 'evaluation'}
    assert updates and updates[0] == 60 and all(s % 2 == 0 for s in updates)
    assert evals[0]['env_step'] == 100 and 0.0 <= evals[0]['success_rate'] <= 1.0
    tr.set_reward_fn(lambda x: np.zeros(len(x)))
    assert tr.reward_version == 1 and tr.replay.sample().reward.max() == 0.0


def test_updates_per_step_raises_the_update_to_data_ratio(env):
    counts = []
    for n in (1, 3):
        cfg = DrQV2Config.from_dict({**CFG, 'agent': {**CFG['agent'], 'updates_per_step': n}})
        tr = Trainer(env, cfg, oracle, task='touch')
        tr.train(100)
        counts.append(tr.update_count)
    assert counts[0] == 21 and counts[1] == 63  # due at env steps 60, 62, ..., 100


def test_pixel_env_trains_with_stacked_frames():
    env = gym.make('SelfAlign/TouchPixels-v0')
    try:
        cfg = DrQV2Config.from_dict({**CFG, 'agent': {**CFG['agent'], 'num_expl_steps': 96}})
        tr = Trainer(env, cfg, oracle, task='touch')
        assert tr.replay.obs_shape == (9, 84, 84) and tr.agent.repr_dim == 32 * 35 * 35
        tr.train(100)
        assert tr.update_count == 3 and np.isfinite(tr.last_metrics['critic_loss'])
    finally:
        env.close()


class _AbortOnce(gym.Wrapper):
    """The real touch env, but step ``at`` of the second episode raises like a silent robot."""

    def __init__(self, env: gym.Env, at: int) -> None:
        super().__init__(env)
        self.at, self.resets, self.t, self.fired = at, 0, 0, False

    def reset(self, **kw):
        self.resets += 1
        self.t = 0
        return self.env.reset(**kw)

    def step(self, action):
        self.t += 1
        if self.resets == 2 and self.t == self.at and not self.fired:
            self.fired = True
            raise EpisodeAbortedError('robot silent')
        return self.env.step(action)


def test_an_aborted_episode_is_dropped_and_played_again_with_its_seed(env):
    cfg = DrQV2Config.from_dict(CFG)
    wrapped = _AbortOnce(env, at=40)
    got = []
    tr = Trainer(wrapped, cfg, oracle, task='touch',
                 callbacks=Callbacks(on_episode_end=got.append))
    tr.train(200)
    assert wrapped.fired and tr.aborted_episodes == 1
    assert [e.episode_index for e in got] == [0, 1]  # the aborted attempt is not an episode
    assert got[1].seed == tr._episode_seed(False, 1) and got[1].features.shape[0] == 100
    assert tr.env_step == 239  # its 39 steps happened and count
    # its complete n-step windows are real transitions and stay; its cut-off tail never samples
    starts = tr.replay._sample_starts(4096)[0]
    eps, ts = tr.replay._ep[starts], tr.replay._t[starts]
    aborted = sorted(set(np.unique(eps)))[1]  # the replay's numbering of the second attempt
    assert len(np.unique(eps)) == 3
    assert ts[eps == aborted].max() <= 39 - tr.replay.nstep


def test_the_replaced_checkpoint_is_kept_and_named_when_the_new_one_is_damaged(tmp_path):
    from selfalign_policy.checkpoint import CheckpointError, previous_path, save_checkpoint

    path = tmp_path / 'checkpoint.pt'
    save_checkpoint(path, {'counters': {'env_step': 100}})
    assert not previous_path(path).exists()  # nothing replaced yet
    save_checkpoint(path, {'counters': {'env_step': 200}})
    prev = previous_path(path)
    assert prev.name == 'checkpoint.prev.pt'
    assert load_checkpoint(prev, restore_rng=False)['counters']['env_step'] == 100
    assert not list(tmp_path.glob('*.tmp'))
    path.write_bytes(path.read_bytes()[:200])  # cut short later (a full disk, a bad copy)
    with pytest.raises(CheckpointError, match='checkpoint.prev.pt'):
        load_checkpoint(path)
    assert load_checkpoint(prev, restore_rng=False)['counters']['env_step'] == 100


class _Split(gym.Wrapper):
    """The real env with ``step_async`` / ``step_wait`` (as the robot-contract env has); every
    call goes into a shared log, so the order of commands and waits across workers shows."""

    def __init__(self, env: gym.Env, name: str, log: list) -> None:
        super().__init__(env)
        self.name, self.log, self._action = name, log, None
        self.label = lambda: self.name  # what each log entry names

    def step_async(self, action):
        self.log.append(('send', self.label()))
        self._action = action

    def step_wait(self):
        self.log.append(('wait', self.label()))
        return self.env.step(self._action)


def test_workers_play_one_episode_each_per_round_into_one_replay_and_one_learner():
    log: list = []
    envs = [_Split(gym.make('SelfAlign/Touch-v0'), f'w{i}', log) for i in range(2)]
    single = gym.make('SelfAlign/Touch-v0')
    try:
        cfg = DrQV2Config.from_dict(CFG)
        got = []
        tr = Trainer(envs, cfg, oracle, task='touch',
                     callbacks=Callbacks(on_episode_end=got.append))
        tr.train(200)
        one = Trainer(single, cfg, oracle, task='touch')
        one.train(200)
        before = (tr.update_count, one.update_count)
        tr.train(400)
        one.train(400)
    finally:
        for e in (*envs, single):
            e.close()
    assert tr.env_step == 400 and [e.worker for e in got] == ['arm_0', 'arm_1'] * 2
    assert [e.episode_index for e in got] == [0, 1, 2, 3]
    assert [e.seed for e in got] == [tr._episode_seed(False, j) for j in range(4)]
    # the update-to-data ratio does not depend on the number of workers (once the first
    # round's episodes are stored: they reach the replay when they end)
    assert before[0] <= 1  # nothing stored before the first round ends
    assert abs((tr.update_count - before[0]) - (one.update_count - before[1])) <= 1
    assert tr.update_count > 90
    # every command of a step goes out before any state is awaited (drivers step in parallel)
    assert log[:4] == [('send', 'w0'), ('send', 'w1'), ('wait', 'w0'), ('wait', 'w1')]
    # each worker's episode is stored whole: the replay's episodes are the played ones
    rp = tr.replay
    ids = [k for k in np.unique(rp._ep) if k >= 0]
    assert len(ids) == len(got)
    for k, ep in zip(ids, got):
        slots = np.flatnonzero((rp._ep == k) & rp._has_tr)
        slots = slots[np.argsort(rp._t[slots])]
        np.testing.assert_array_equal(rp._features[slots], ep.features)


@pytest.mark.parametrize('overlap', [True, False])
def test_the_learner_updates_while_a_driver_steps(overlap):
    """With a split env (a driver over ROS) the updates a step made due run between the next
    command and its state, so driver and learner work at once; as many as with a plain env."""
    log: list = []  # ('send' | 'wait', update count then)
    env = _Split(gym.make('SelfAlign/Touch-v0'), 'w0', log)
    plain = gym.make('SelfAlign/Touch-v0')
    try:
        cfg = DrQV2Config.from_dict({**CFG, 'trainer': {**CFG['trainer'],
                                                        'overlap_updates': overlap}})
        tr = Trainer(env, cfg, oracle, task='touch')
        env.label = lambda: tr.update_count
        tr.train(300)
        one = Trainer(plain, cfg, oracle, task='touch')
        one.train(300)
    finally:
        env.close()
        plain.close()
    assert tr.update_count == one.update_count > 100
    counts = [n for _, n in log]
    sends, waits = counts[0::2], counts[1::2]
    during = sum(w > s for s, w in zip(sends, waits))
    if overlap:  # every step after the first update's has one in flight
        assert during >= tr.update_count - 5
    else:
        assert during == 0


class _AbortWorker(gym.Wrapper):
    """Aborts its first episode at step ``at``."""

    def __init__(self, env: gym.Env, at: int) -> None:
        super().__init__(env)
        self.at, self.t, self.fired, self.seeds = at, 0, False, []

    def reset(self, **kw):
        self.t = 0
        self.seeds.append(kw.get('seed'))
        return self.env.reset(**kw)

    def step(self, action):
        self.t += 1
        if self.t == self.at and not self.fired:
            self.fired = True
            raise EpisodeAbortedError('robot silent')
        return self.env.step(action)


def test_a_worker_whose_episode_aborts_plays_that_seed_again_next_round():
    envs = [gym.make('SelfAlign/Touch-v0'), _AbortWorker(gym.make('SelfAlign/Touch-v0'), 30)]
    try:
        cfg = DrQV2Config.from_dict(CFG)
        got = []
        tr = Trainer(envs, cfg, oracle, task='touch',
                     callbacks=Callbacks(on_episode_end=got.append))
        tr.train(300)
        ev = tr.evaluate(3)
    finally:
        for e in envs:
            e.close()
    assert tr.aborted_episodes == 1 and envs[1].fired
    # round 1: arm_0 plays 0, arm_1 aborts 1; round 2: arm_0 plays 1 again, arm_1 plays 2
    assert [(e.worker, e.episode_index) for e in got[:3]] == [
        ('arm_0', 0), ('arm_0', 1), ('arm_1', 2)]
    assert envs[1].seeds[0] == got[1].seed == tr._episode_seed(False, 1)
    assert tr.env_step == 100 + 29 + 200
    evals = [e for e in got if e.evaluation]
    assert ev['episodes'] == 3 and len(evals) == 3
    assert sorted(e.seed for e in evals) == [10**9 + 3 * 1_000_003 + j for j in range(3)]


def test_a_batch_of_observations_gets_the_actions_each_would_get_alone(env):
    cfg = DrQV2Config.from_dict(CFG)
    tr = Trainer(env, cfg, oracle, task='touch')
    obs = np.random.default_rng(0).normal(size=(5, features.OBS_DIM)).astype(np.float32)
    batch = tr.agent.act_batch(obs, 10_000, eval_mode=True)
    assert batch.shape == (5, 4)
    for o, a in zip(obs, batch):
        np.testing.assert_allclose(tr.agent.act(o, 10_000, eval_mode=True), a, atol=1e-6)
