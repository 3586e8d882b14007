"""Launch the push task: simulator bridge (or driver:=external), policy, reward, alignment, LLM.

ros2 launch selfalign_bringup push.launch.py [llm:=scripted|openai|replay model:=... base_url:=...
    obs:=state|pixels driver:=pybullet|external rviz:=true use_sim_time:=true run_dir:=... seed:=0]
"""

from selfalign_bringup.launch_description import generate


def generate_launch_description():
    return generate('push')
