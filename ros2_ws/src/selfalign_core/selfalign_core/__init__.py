"""selfalign_core: what every selfalign package shares; it imports none of them.

``contract`` (robot-contract names, frames, action scaling), ``names`` (every topic and service
name, relative), ``qos``, ``contract_msgs`` (messages <-> arrays), ``observation``
(``ObservationBuilder``: contract state -> features and policy observation), ``features`` (the
reward-input vocabulary), ``tasks`` (task words and success), ``episode`` (``EpisodeRecord``),
``executors`` and ``run_node`` (every node's ``main``). Only ``executors`` and ``qos`` import
rclpy.
"""
