"""monitor_node: rviz markers, metrics.csv + learning-curve plots, and MCAP recording of a run.

One writer per run, the same in the all-in-one `train` process and in the multi-process launch:
episodes, alignment reports and each new reward spec version become rows of ``metrics.csv``
(``selfalign_bringup.rundir``; the parameter table goes to ``reward_params.yaml`` for the θ plot),
plots are redrawn after each alignment update and every ``plot_every_episodes`` episodes (in a
worker process, ``rundir.Plotter``: matplotlib's CPU does not hold this process's GIL, which in
the embedded run the learner needs), and the robot-contract and selfalign topics are recorded
raw into ``recording.mcap`` (``selfalign_bringup.recording``).

Parameters:
  run_dir (string, ''): run directory; empty = markers only, nothing written.
  record (bool, true): record topics into <run_dir>/recording.mcap (after a resume: the next
      free recording-<k>.mcap; earlier parts are kept). Flushed every FLUSH_EVERY_S; a part
      that a killed run left open is rewritten complete when the run resumes.
  record_camera (bool, false): also record /camera/image_raw (large).
  trail_length (int, 200): end-effector trail points shown.
  plot_every_episodes (int, 50): redraw plots after this many episodes.
  plot_min_interval_s (float, 60.0): plots are redrawn at most this often (a redraw costs ~1 s
    of CPU that a short run would otherwise spend every few hundred steps; the first no sooner
    than FIRST_PLOT_AFTER_S after the start); always at the end.
  videos_per_eval (int, 1): evaluation episodes per evaluation round rendered to
    <run_dir>/videos/eval-<env_step>-<i>.mp4 (selfalign_bringup.video); 0 = none. From the
    camera when the driver sent frames stamped within the episode (Episode.start_stamp,
    end_stamp), with the episode's facts overlaid; else a schematic drawn from its features.
  video_topic (string, 'camera/video/image_raw'): camera frames for those videos (the bridge
    films episodes reset with render_video; a real driver may point this at its camera).
  video_buffer_mb (int, 200): camera frames kept while waiting for their episode.
Subscribes:
  /ee_pose, /object_pose, /selfalign/goal_pose (geometry_msgs/PoseStamped),
  /selfalign/reward_spec (RewardSpec, latched), /selfalign/episode (Episode),
  /selfalign/alignment_report (AlignmentReport); video_topic (sensor_msgs/Image) with a run
  directory and videos_per_eval > 0; when recording, also /joint_states,
  /ee_wrench, /servo_node/delta_twist_cmds, /gripper_controller/commands.
Publishes:
  /selfalign/markers (visualization_msgs/MarkerArray): block, goal, EE trail, status text;
  10 Hz of wall time (a thread of its own), whatever the sim's speed; only while someone
  subscribes (rviz): with no subscriber none is built.

The per-step topics (poses for the markers, everything recorded) are not executor callbacks:
the marker thread takes the poses that arrived since its last tick and a recorder thread takes
the recorded messages (``selfalign_core.polled``), so a step costs this node no executor
wake-up (docs/performance.md).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import threading
import time

from geometry_msgs.msg import Point, PoseStamped
import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data, QoSProfile
from sensor_msgs.msg import Image
from visualization_msgs.msg import Marker, MarkerArray

from selfalign_bringup.recording import recover, TopicRecorder
from selfalign_bringup.rundir import Plotter, round_start_step, RunDir
from selfalign_bringup.video import write_camera_video, write_episode_video
from selfalign_core import contract_msgs as cm
from selfalign_core import names as N
from selfalign_core.executors import run_node
from selfalign_core.polled import PolledSubscription, PollGroup
from selfalign_core.qos import LATCHED
from selfalign_interfaces.msg import AlignmentReport, Episode, RewardSpec
from selfalign_policy.frame_buffer import FrameBuffer

#: Topics recorded into the run's MCAP file, with their types.
RECORDED_TOPICS = {
    N.JOINT_STATES: 'sensor_msgs/msg/JointState',
    N.EE_POSE: 'geometry_msgs/msg/PoseStamped',
    N.EE_WRENCH: 'geometry_msgs/msg/WrenchStamped',
    N.OBJECT_POSE: 'geometry_msgs/msg/PoseStamped',
    N.TWIST_CMD: 'geometry_msgs/msg/TwistStamped',
    N.GRIPPER_CMD: 'std_msgs/msg/Float64MultiArray',
    N.REWARD_SPEC: 'selfalign_interfaces/msg/RewardSpec',
    N.EPISODE: 'selfalign_interfaces/msg/Episode',
    N.ALIGNMENT_REPORT: 'selfalign_interfaces/msg/AlignmentReport',
}


#: Markers are published this often (wall time), s.
MARKER_PERIOD_S = 0.1
#: The first plot is drawn no earlier than this after the monitor starts, s (then at most every
#: plot_min_interval_s).
FIRST_PLOT_AFTER_S = 10.0
#: The recorder takes what arrived at most this often (wall time), s; the recorded
#: subscriptions' history (RECORD_DEPTH) must hold that long of messages.
RECORD_BATCH_S = 0.05
#: History depth of the recorded subscriptions (per topic).
RECORD_DEPTH = 200
#: The recording is flushed to complete chunks this often (what a SIGKILL can lose), s.
FLUSH_EVERY_S = 2.0
#: How long a video waits for the camera frames of its episode's last steps, s.
FRAME_GRACE_S = 2.0


@dataclass
class _VideoJob:
    packed: np.ndarray
    name: str
    label: str
    success: bool
    start_ns: int
    end_ns: int
    deadline: float


def _type_of(name: str):
    pkg, _, cls = name.split('/')
    module = __import__(f'{pkg}.msg', fromlist=[cls])
    return getattr(module, cls)


class MonitorNode(Node):
    """Markers for rviz; metrics, plots and recording for the run directory."""

    #: the clock only stamps logs, markers and recording times: it follows sim time at most
    #: 20 times a second (wall), not once per sim step (selfalign_core.polled.SharedSimClock)
    SIM_CLOCK_MIN_PERIOD_S = 0.05

    def __init__(self, **kwargs):
        super().__init__('monitor_node', **kwargs)
        run_dir = self.declare_parameter('run_dir', '').value
        record = self.declare_parameter('record', True).value
        record_camera = self.declare_parameter('record_camera', False).value
        self._trail = deque(maxlen=int(self.declare_parameter('trail_length', 200).value))
        self._plot_every = int(self.declare_parameter('plot_every_episodes', 50).value)
        self._plot_min_interval_s = float(
            self.declare_parameter('plot_min_interval_s', 60.0).value)
        self._videos_per_eval = int(self.declare_parameter('videos_per_eval', 1).value)
        video_topic = self.declare_parameter('video_topic', 'camera/video/image_raw').value
        video_mb = int(self.declare_parameter('video_buffer_mb', 200).value)
        self._frames = FrameBuffer(video_mb * 2**20)
        self._videos: list[_VideoJob] = []
        self._videos_lock = threading.Lock()
        self._eval_rendered: dict[int, int] = {}
        self._run = RunDir(run_dir) if run_dir else None
        #: redraws in a worker process: matplotlib off this process's GIL (rundir.Plotter)
        self._plots = Plotter(self._run) if self._run is not None else None
        self._lock = threading.Lock()
        self._spec: RewardSpec | None = None
        self._report: AlignmentReport | None = None
        self._block: PoseStamped | None = None
        self._goal: PoseStamped | None = None
        self._episodes = 0
        self._recent_success: deque[bool] = deque(maxlen=20)

        self._pub = self.create_publisher(MarkerArray, N.MARKERS, 10)
        # the marker timer takes what arrived since its last tick (every pose for the trail)
        trail_qos = QoSProfile(history=qos_profile_sensor_data.history,
                               depth=self._trail.maxlen or 1,
                               reliability=qos_profile_sensor_data.reliability,
                               durability=qos_profile_sensor_data.durability)
        self._ee_sub = PolledSubscription(self, PoseStamped, N.EE_POSE, trail_qos)
        self._block_sub = PolledSubscription(self, PoseStamped, N.OBJECT_POSE,
                                             qos_profile_sensor_data)
        self._goal_sub = PolledSubscription(self, PoseStamped, N.GOAL_POSE, LATCHED)
        self.create_subscription(RewardSpec, N.REWARD_SPEC, self._on_spec, LATCHED)
        self.create_subscription(Episode, N.EPISODE, self._on_episode, 50)
        self.create_subscription(AlignmentReport, N.ALIGNMENT_REPORT,
                                 self._on_report, 10)
        if run_dir and self._videos_per_eval > 0 and video_topic:
            self.create_subscription(Image, video_topic, self._frames.put, 30)
        # the last training episode's env_step (from metrics.csv after a resume)
        rows = self._run.read_metrics() if self._run else []
        self._last_train_step = max(
            (int(r['env_step']) for r in rows if r.get('kind') == 'episode'), default=-1)
        # the last reward spec version logged (a resumed run does not log it again)
        self._spec_version = next((r.get('version') for r in reversed(rows)
                                   if r.get('kind') == 'reward_spec'), None)
        self._recorder = None
        self._recorded: list[tuple[str, PolledSubscription]] = []
        if self._run is not None and record:
            self._recover_recordings()
            topics = dict(RECORDED_TOPICS)
            if record_camera:
                topics[N.CAMERA_IMAGE] = 'sensor_msgs/msg/Image'
            self._recorder = TopicRecorder(self._run.new_recording_path())
            for topic, type_name in topics.items():
                full = self.resolve_topic_name(topic)  # the recording names the real topic
                self._recorder.add_topic(full, type_name)
                qos = LATCHED if topic == N.REWARD_SPEC else RECORD_DEPTH
                self._recorded.append((full, PolledSubscription(self, _type_of(type_name),
                                                                topic, qos, raw=True)))
        # Plotting takes ~1 s of matplotlib: never in a callback. Requests coalesce.
        self._plot_request = threading.Event()
        self._closing = threading.Event()
        self._plotter = threading.Thread(target=self._plot_loop, daemon=True)
        self._plotter.start()
        # markers at 10 Hz of wall time on a thread of their own: a timer would wake the
        # executor (in the embedded run, a rebuild of its wait set over every node) ten times
        # a second for it
        self._marker_thread = threading.Thread(target=self._marker_loop, daemon=True)
        self._marker_thread.start()
        self._record_lock = threading.Lock()
        self._record_thread = None
        self.record_wakeups = 0  # times the recorder thread woke to write (a test reads it)
        if self._recorded:
            self._record_thread = threading.Thread(target=self._record_loop, daemon=True)
            self._record_thread.start()
        self.get_logger().info(
            f'monitor: run_dir={run_dir or "(none)"} record={bool(self._recorder)}')

    # --- callbacks: convert and hand over; no heavy work except plotting on rare events ---
    def _record_loop(self):
        group = PollGroup(self, [sub for _, sub in self._recorded])
        while not self._closing.is_set():
            if group.ready(0.2):
                self.record_wakeups += 1
                # let a batch arrive: one wake-up per RECORD_BATCH_S instead of one per message
                # (each wake-up takes the GIL from the training thread in the embedded run)
                self._closing.wait(RECORD_BATCH_S)
                self._record_waiting()

    def _record_waiting(self):
        """Write every recorded message waiting, in the order they arrived."""
        with self._record_lock:
            taken = []
            for topic, sub in self._recorded:
                while (got := sub.take_with_info()) is not None:
                    taken.append((got[1].get('received_timestamp', 0), topic, got[0]))
            now = self.get_clock().now().nanoseconds
            for _, topic, data in sorted(taken, key=lambda t: t[0]):
                self._recorder.write(topic, data, now)

    def _marker_loop(self):
        while not self._closing.wait(MARKER_PERIOD_S):
            if self._pub.get_subscription_count() == 0:
                # nobody draws them (no rviz): build nothing. The poses wait in the trail
                # subscription's history (trail_length deep), so an rviz that connects later
                # sees the recent trail at once.
                continue
            try:
                self._publish_markers()
            except Exception as exc:  # noqa: BLE001 - the context may be going down
                if self.context.ok():
                    self.get_logger().warning(f'markers: {exc}', throttle_duration_sec=10.0)

    def _take_poses(self):
        for msg in self._ee_sub.take_all():
            p = msg.pose.position
            self._trail.append(Point(x=p.x, y=p.y, z=p.z))
        self._block = self._block_sub.take_latest() or self._block
        self._goal = self._goal_sub.take_latest() or self._goal

    def _on_spec(self, msg: RewardSpec):
        self._spec = msg
        if self._run is None or str(msg.version) == self._spec_version:
            return
        self._spec_version = str(msg.version)
        names = list(msg.param_names)

        def column(values) -> list:
            values = list(values)
            return values if len(values) == len(names) else [None] * len(names)

        self._run.write_params([
            {'name': n, 'lower': lo, 'upper': up, 'scale': sc, 'initial': v}
            for n, v, lo, up, sc in zip(names, column(msg.param_values), column(msg.param_lower),
                                        column(msg.param_upper), column(msg.param_scale))])
        # the first spec is the reward at step 0; later ones follow the last training episode
        self._run.log('reward_spec', max(self._last_train_step, 0), version=msg.version,
                      **{f'theta.{n}': f'{v:.6g}' for n, v in zip(names, msg.param_values)})

    def _on_episode(self, msg: Episode):
        with self._lock:
            self._episodes += 1
            if not msg.evaluation:
                self._recent_success.append(bool(msg.success))
        if self._run is None:
            return
        if not msg.evaluation:
            if msg.env_step <= self._last_train_step:
                # The policy resumed from a checkpoint older than what was logged (it was
                # killed): its replayed steps replace the first version of them. With N
                # workers a round of episodes spans N env steps per tick.
                workers = len(self._run.worker_names() | ({msg.worker} - {''}))
                start = round_start_step(msg.env_step, msg.num_steps, workers)
                dropped = self._run.rewind(start)
                self.get_logger().info(f'policy resumed at env step {start}: dropped {dropped} '
                                       'metric rows logged after it')
            self._last_train_step = int(msg.env_step)
        self._run.log('eval' if msg.evaluation else 'episode', msg.env_step,
                      episode=msg.episode_index, success=int(msg.success),
                      success_rate=int(msg.success) if msg.evaluation else '',
                      ret=f'{sum(msg.rewards):.4f}', reward_version=msg.reward_version,
                      worker=msg.worker)
        if msg.evaluation and msg.num_steps and msg.feature_dim:
            done = self._eval_rendered.get(msg.env_step, 0)
            if done < self._videos_per_eval:
                self._eval_rendered[msg.env_step] = done + 1
                packed = np.asarray(msg.features, np.float32).reshape(msg.num_steps,
                                                                      msg.feature_dim)
                job = _VideoJob(packed, f'eval-{msg.env_step}-{done}',
                                f'{msg.task} eval @ {msg.env_step}', bool(msg.success),
                                cm.stamp_ns(msg.start_stamp), cm.stamp_ns(msg.end_stamp),
                                time.monotonic() + FRAME_GRACE_S)
                with self._videos_lock:
                    self._videos.append(job)
                self._plot_request.set()
        if self._episodes % self._plot_every == 0:
            self._plot_request.set()

    def _on_report(self, msg: AlignmentReport):
        self._report = msg
        if self._run is None:
            return
        theta = {f'theta.{n}': f'{v:.6g}' for n, v in zip(msg.param_names, msg.theta_after)}
        self._run.log('alignment', msg.env_step, status=msg.status,
                      kendall_tau_before=f'{msg.kendall_tau_before:.4f}',
                      kendall_tau_after=f'{msg.kendall_tau_after:.4f}',
                      acceptance_rate=f'{msg.acceptance_rate:.3f}',
                      heldout_before=f'{msg.heldout_agreement_before:.4f}',
                      heldout_after=f'{msg.heldout_agreement_after:.4f}',
                      theta_move=f'{msg.theta_move:.4f}',
                      failure_analysis=int(msg.failure_analysis), **theta)
        self._plot_request.set()

    def _recover_recordings(self):
        """Earlier parts of this run that a kill left without their footer become readable."""
        for path in sorted(self._run.path.glob('recording*.mcap')):
            try:
                kept = recover(path)
            except Exception as exc:  # noqa: BLE001 - a recording must never stop a run
                self.get_logger().warning(f'{path.name} could not be recovered: {exc}')
                continue
            if kept >= 0:
                self.get_logger().warning(
                    f'{path.name} was left open by a killed process: rewrote it complete with '
                    f'the {kept} messages recorded before its last flush')

    def _plot_loop(self):
        last_flush = time.monotonic()
        last_plot = time.monotonic() - self._plot_min_interval_s + FIRST_PLOT_AFTER_S
        while not self._closing.is_set():
            requested = self._plot_request.wait(timeout=0.5)
            if self._recorder is not None and time.monotonic() - last_flush >= FLUSH_EVERY_S:
                self._recorder.flush()  # a SIGKILL then loses at most this long
                last_flush = time.monotonic()
            self._render_videos()
            if requested and time.monotonic() - last_plot < self._plot_min_interval_s:
                self._closing.wait(0.5)  # the request stays set until the plot is due
                continue
            if requested:
                self._plot_request.clear()
                last_plot = time.monotonic()
                try:
                    self._plots.plot()
                except Exception as exc:  # noqa: BLE001 - a plot must never stop a run
                    self.get_logger().warning(f'plotting failed: {exc}')

    def _render_videos(self, final: bool = False):
        """Write the queued videos whose camera frames are in (or whose grace ran out): from
        the camera with the facts overlaid, or the schematic when no frames came."""
        with self._videos_lock:
            ready = [j for j in self._videos
                     if final or j.end_ns <= 0 or self._frames.newest_ns() >= j.end_ns
                     or time.monotonic() >= j.deadline]
            self._videos = [j for j in self._videos if j not in ready]
        for job in ready:
            path = self._run.path / 'videos' / f'{job.name}.mp4'
            try:
                path.parent.mkdir(exist_ok=True)
                frames = self._frames.between(job.start_ns, job.end_ns) if job.end_ns > 0 else []
                if len(frames) >= 2:
                    write_camera_video(frames, job.packed, path, job.label, job.success)
                else:
                    outcome = 'success' if job.success else 'fail'
                    write_episode_video(job.packed, path, f'{job.label} {outcome}')
            except Exception as exc:  # noqa: BLE001 - a video must never stop a run
                self.get_logger().warning(f'video {job.name} failed: {exc}')

    def _publish_markers(self):
        self._take_poses()
        stamp = self.get_clock().now().to_msg()
        markers = MarkerArray()

        def marker(mid, kind, **kw):
            m = Marker(id=mid, type=kind, action=Marker.ADD, ns='selfalign', **kw)
            m.header.frame_id = 'base_link'
            m.header.stamp = stamp
            m.color.a = 1.0
            return m

        if self._block is not None:
            m = marker(0, Marker.CUBE, pose=self._block.pose)
            m.scale.x = m.scale.y = m.scale.z = 0.05
            m.color.r, m.color.g, m.color.b = 0.8, 0.3, 0.1
            markers.markers.append(m)
        if self._goal is not None:
            m = marker(1, Marker.CYLINDER, pose=self._goal.pose)
            m.scale.x = m.scale.y = 0.10  # 5 cm success radius
            m.scale.z = 0.002
            m.color.g, m.color.a = 0.9, 0.5
            markers.markers.append(m)
        if len(self._trail) > 1:
            m = marker(2, Marker.LINE_STRIP, points=list(self._trail))
            m.scale.x = 0.004
            m.color.b, m.color.g = 1.0, 0.6
            markers.markers.append(m)
        m = marker(3, Marker.TEXT_VIEW_FACING, text=self._status_text())
        m.pose.position.x, m.pose.position.y, m.pose.position.z = 0.4, -0.45, 0.6
        m.scale.z = 0.03
        m.color.r = m.color.g = m.color.b = 1.0
        markers.markers.append(m)
        self._pub.publish(markers)

    def _status_text(self) -> str:
        lines = []
        if self._spec is not None:
            theta = ', '.join(f'{n}={v:.3g}' for n, v in
                              zip(self._spec.param_names, self._spec.param_values))
            lines.append(f'reward v{self._spec.version} ({self._spec.source}): {theta}')
        if self._recent_success:
            rate = sum(self._recent_success) / len(self._recent_success)
            lines.append(f'episodes {self._episodes}, recent success {rate:.0%}')
        if self._report is not None:
            r = self._report
            lines.append(f'alignment #{r.update_index} at {r.env_step} steps: {r.status}, '
                         f'tau {r.kendall_tau_before:.2f} -> {r.kendall_tau_after:.2f}')
        return '\n'.join(lines) or 'waiting for the reward spec'

    def close(self):
        """Flush the recording and redraw the plots (called on shutdown)."""
        self._closing.set()
        self._plotter.join(timeout=10)
        self._marker_thread.join(timeout=5)
        if self._record_thread is not None:
            self._record_thread.join(timeout=10)
        if self._run is not None:
            self._render_videos(final=True)
        if self._recorder is not None:
            self._record_waiting()
            self._recorder.close()
        if self._run is not None:
            try:
                self._plots.plot()
            except Exception as exc:  # noqa: BLE001 - the recording and metrics are written
                self.get_logger().warning(f'final plots failed: {exc}')
            self._plots.close()

    def destroy_node(self):
        for sub in [self._ee_sub, self._block_sub, self._goal_sub,
                    *(sub for _, sub in self._recorded)]:
            sub.destroy()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(MonitorNode, num_threads=1, args=args)


if __name__ == '__main__':
    main()
