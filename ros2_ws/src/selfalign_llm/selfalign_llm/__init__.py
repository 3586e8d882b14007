"""selfalign_llm: the LLM roles (propose reward, rank, analyse failure) over any backend.

Import the pure facade from here: ``LLMClient`` / ``make_client(LLMConfig(...))``; llm_node wraps
it in ROS services. No rclpy at import.
"""

from selfalign_llm.client import ClientConfig, LLMClient, LLMError, Ranking
from selfalign_llm.config import LLMConfig, make_backend, make_client

__all__ = ['ClientConfig', 'LLMClient', 'LLMConfig', 'LLMError', 'Ranking', 'make_backend',
           'make_client']
