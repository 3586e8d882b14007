# The README's commands. Everything is installed by scripts/setup.sh into .venv (no ROS needed).
TASK ?= push
ARGS ?=

.PHONY: setup test train lint clean

setup:
	bash scripts/setup.sh

test: setup
	bash scripts/test.sh

lint: setup
	. scripts/env.sh && ruff check .

train: setup
	bin/selfalign train --task $(TASK) $(ARGS)

clean:
	rm -rf ros2_ws/build ros2_ws/install ros2_ws/log
