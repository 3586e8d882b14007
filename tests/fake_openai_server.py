"""Cross-package tests' handle on the scripted OpenAI-compatible server (selfalign_llm's).

``from fake_openai_server import FakeOpenAIServer`` (tests/ on sys.path) or import
``selfalign_llm.fake_openai_server`` directly; see that module for the script format.
"""

from selfalign_llm.fake_openai_server import FakeOpenAIServer, main

__all__ = ['FakeOpenAIServer', 'main']

if __name__ == '__main__':
    main()
