"""LLMConfig -> backends: names, bad settings and the replay/transcript guard."""

import math

import pytest

from selfalign_llm.backends.replay import ReplayBackend
from selfalign_llm.backends.scripted import ScriptedTeacher
from selfalign_llm.config import LLMConfig, make_backend, make_client


def test_backends_by_name(tmp_path):
    teacher = make_backend(LLMConfig(teacher_beta=0.0, teacher_mistake_rate=0.2, seed=3))
    assert isinstance(teacher, ScriptedTeacher)
    assert teacher.config.beta == math.inf and teacher.config.mistake_rate == 0.2
    (tmp_path / 'old.jsonl').write_text('')
    client = make_client(LLMConfig(backend='replay', replay_path=str(tmp_path / 'old.jsonl'),
                                   transcript_path=str(tmp_path / 'new.jsonl'), max_reasks=5))
    assert isinstance(client.backend, ReplayBackend) and client.config.max_reasks == 5


@pytest.mark.parametrize('cfg, words', [
    (LLMConfig(backend='claude'), "unknown backend 'claude'"),
    (LLMConfig(backend='replay'), 'needs replay_path'),
    (LLMConfig(backend='replay', replay_path='/tmp/x.jsonl', transcript_path='/tmp/x.jsonl'),
     'the same file'),
    (LLMConfig(teacher_mistake_rate=0.7), r'mistake_rate must be in \[0, 0.5\]'),
])
def test_bad_settings_are_named(cfg, words):
    with pytest.raises(ValueError, match=words):
        make_backend(cfg)


def test_from_dict_rejects_unknown_keys():
    assert LLMConfig.from_dict({'backend': 'openai', 'model': 'm'}).openai.model == 'm'
    with pytest.raises(ValueError, match=r"\['api_key'\]"):
        LLMConfig.from_dict({'api_key': 'secret'})


def test_replay_of_missing_file_says_what_to_set(tmp_path):
    with pytest.raises(FileNotFoundError, match='transcript.jsonl of the run to replay'):
        ReplayBackend(tmp_path / 'nope.jsonl')
