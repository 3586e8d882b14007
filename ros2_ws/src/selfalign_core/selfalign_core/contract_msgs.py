"""Robot-contract ROS messages <-> numpy arrays; message types only, no rclpy nodes.

Every driver-facing message of the robot contract (docs/design.md "Robot contract") converts
here, both ways, so the bridge, the policy node, the conformance suite and the benchmarks agree
on units and frames:

* ``sensor_msgs/JointState``: joints are looked up **by name**, never by index
  (``contract.FINGER_JOINTS`` for the gripper).  Positions rad / m, efforts N·m / N.
* ``geometry_msgs/PoseStamped``: position (3,) m and quaternion (x, y, z, w) (4,).
* ``geometry_msgs/WrenchStamped``: force (3,) N and torque (3,) N·m.
* ``geometry_msgs/TwistStamped``: linear velocity (3,) m/s (angular ignored by the contract).
* ``std_msgs/Float64MultiArray``: gripper command, ``data[0]`` = finger width m.
* ``sensor_msgs/Image`` (``rgb8``): uint8 (H, W, 3); ``sensor_msgs/CameraInfo`` from K (3, 3).

Stamps are integer nanoseconds (``stamp_ns``) so that equal stamps compare equal exactly;
``stamp_to_sec`` gives float seconds where a float is what the caller wants.
"""

from __future__ import annotations

from collections.abc import Sequence

from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, TwistStamped, WrenchStamped
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, Header

from selfalign_core.contract import BASE_FRAME, CAMERA_FRAME, FINGER_JOINTS
from selfalign_core.observation import ContractSnapshot

_NS = 1_000_000_000


# --------------------------------------------------------------------------- stamps
def ns_to_stamp(stamp_ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time."""
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise ValueError(f'stamp_ns must be >= 0, got {stamp_ns}')
    return Time(sec=stamp_ns // _NS, nanosec=stamp_ns % _NS)


def sec_to_stamp(t_s: float) -> Time:
    """Float seconds -> builtin_interfaces/Time (rounded to the nearest nanosecond)."""
    return ns_to_stamp(round(float(t_s) * _NS))


def stamp_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (exact)."""
    return int(stamp.sec) * _NS + int(stamp.nanosec)


def stamp_to_sec(stamp: Time) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return stamp_ns(stamp) / _NS


def make_header(stamp: Time | int, frame_id: str = BASE_FRAME) -> Header:
    """Header from a Time or integer nanoseconds."""
    if not isinstance(stamp, Time):
        stamp = ns_to_stamp(stamp)
    return Header(stamp=stamp, frame_id=frame_id)


# --------------------------------------------------------------------------- joint states
def joint_state_msg(names: Sequence[str], positions: np.ndarray, velocities: np.ndarray,
                    efforts: np.ndarray, stamp: Time | int, frame_id: str = '') -> JointState:
    """Arrays (N,) in joint units -> JointState.  All four sequences must have length N."""
    n = len(names)
    for field, arr in (('positions', positions), ('velocities', velocities),
                       ('efforts', efforts)):
        if len(arr) != n:
            raise ValueError(f'joint_state_msg: {field} has {len(arr)} entries but names has {n}; '
                             'pass one value per joint name')
    msg = JointState(header=make_header(stamp, frame_id))
    msg.name = list(names)
    msg.position = np.asarray(positions, dtype=np.float64).tolist()
    msg.velocity = np.asarray(velocities, dtype=np.float64).tolist()
    msg.effort = np.asarray(efforts, dtype=np.float64).tolist()
    return msg


def joint_values(msg: JointState, names: Sequence[str], field: str = 'position') -> np.ndarray:
    """Values of the named joints from a JointState, looked up by name, float64 (len(names),).

    ``field`` is 'position', 'velocity' or 'effort'.  A KeyError names the missing joint and the
    joints the message does carry; a ValueError says when the message has no such field data.
    """
    data = getattr(msg, field)
    if len(data) != len(msg.name):
        raise ValueError(f'JointState.{field} has {len(data)} entries for {len(msg.name)} names; '
                         f'the driver must publish {field} for every joint to use it here')
    index = {n: i for i, n in enumerate(msg.name)}
    out = np.empty(len(names), dtype=np.float64)
    for k, n in enumerate(names):
        i = index.get(n)
        if i is None:
            raise KeyError(f'joint {n!r} not in JointState (has {list(msg.name)}); remap or '
                           'rename the driver joints to the contract names')
        out[k] = data[i]
    return out


def has_efforts(msg: JointState, names: Sequence[str] = FINGER_JOINTS) -> bool:
    """True when the message carries an effort for every named joint."""
    if len(msg.effort) != len(msg.name):
        return False
    return all(n in msg.name for n in names)


def finger_width(msg: JointState) -> float:
    """Finger width m = sum of the finger joint positions (contract.FINGER_JOINTS)."""
    return float(joint_values(msg, FINGER_JOINTS, 'position').sum())


def finger_efforts(msg: JointState) -> np.ndarray:
    """Per-finger pad contact force N, (2,) in FINGER_JOINTS order (left, right)."""
    return joint_values(msg, FINGER_JOINTS, 'effort')


# --------------------------------------------------------------------------- poses, wrenches
def pose_msg(position: np.ndarray, quat_xyzw: np.ndarray, stamp: Time | int,
             frame_id: str = BASE_FRAME) -> PoseStamped:
    """Position (3,) m and quaternion (x, y, z, w) (4,) -> PoseStamped."""
    msg = PoseStamped(header=make_header(stamp, frame_id))
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in position[:3])
    q.x, q.y, q.z, q.w = (float(v) for v in quat_xyzw[:4])
    return msg


def pose_arrays(msg: PoseStamped) -> tuple[np.ndarray, np.ndarray]:
    """PoseStamped -> (position (3,) m, quaternion (x, y, z, w) (4,)), float64."""
    p, q = msg.pose.position, msg.pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])


def wrench_msg(force: np.ndarray, torque: np.ndarray, stamp: Time | int,
               frame_id: str = BASE_FRAME) -> WrenchStamped:
    """Force (3,) N and torque (3,) N·m -> WrenchStamped."""
    msg = WrenchStamped(header=make_header(stamp, frame_id))
    f, t = msg.wrench.force, msg.wrench.torque
    f.x, f.y, f.z = (float(v) for v in force[:3])
    t.x, t.y, t.z = (float(v) for v in torque[:3])
    return msg


def wrench_arrays(msg: WrenchStamped) -> tuple[np.ndarray, np.ndarray]:
    """WrenchStamped -> (force (3,) N, torque (3,) N·m), float64."""
    f, t = msg.wrench.force, msg.wrench.torque
    return np.array([f.x, f.y, f.z]), np.array([t.x, t.y, t.z])


# --------------------------------------------------------------------------- commands
def twist_msg(linear_mps: np.ndarray, stamp: Time | int,
              frame_id: str = BASE_FRAME) -> TwistStamped:
    """EE linear velocity (3,) m/s in the base frame -> TwistStamped (angular zero)."""
    msg = TwistStamped(header=make_header(stamp, frame_id))
    v = msg.twist.linear
    v.x, v.y, v.z = (float(x) for x in linear_mps[:3])
    return msg


def twist_linear(msg: TwistStamped) -> np.ndarray:
    """TwistStamped -> linear velocity (3,) m/s, float64, in the base frame.

    ValueError for non-finite values, or a frame other than ``BASE_FRAME`` ('' counts as the
    base frame): the contract takes velocities in the base frame, so any other is refused rather
    than applied as if it were one.
    """
    frame = msg.header.frame_id
    if frame not in ('', BASE_FRAME):
        raise ValueError(f'twist in frame {frame!r}: the contract takes EE velocities in '
                         f'{BASE_FRAME!r}; transform it first')
    v = msg.twist.linear
    out = np.array([v.x, v.y, v.z])
    if not np.all(np.isfinite(out)):
        raise ValueError(f'twist linear velocity is not finite: {out.tolist()}')
    return out


def gripper_msg(width_m: float) -> Float64MultiArray:
    """Finger width m -> the forward-command-controller message (data = [width])."""
    return Float64MultiArray(data=[float(width_m)])


def gripper_width(msg: Float64MultiArray) -> float:
    """Gripper command -> finger width m: ``data == [width_m]``, the distance between the pads.

    ValueError when ``data`` is not exactly one finite number. (A stock forward controller on
    one finger joint takes that joint's position: for the Panda that is width / 2 per finger;
    see docs/bring_your_own_arm.md.)
    """
    if len(msg.data) != 1:
        raise ValueError(f'gripper command has {len(msg.data)} entries; send '
                         'Float64MultiArray(data=[width_m]) (the distance between the pads)')
    w = float(msg.data[0])
    if not np.isfinite(w):
        raise ValueError(f'gripper command width is not finite: {w}')
    return w


# --------------------------------------------------------------------------- camera
def image_msg(rgb: np.ndarray, stamp: Time | int, frame_id: str = CAMERA_FRAME) -> Image:
    """uint8 (H, W, 3) RGB -> sensor_msgs/Image, encoding rgb8."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'image must be uint8 (H, W, 3), got shape {rgb.shape}')
    h, w, _ = rgb.shape
    msg = Image(header=make_header(stamp, frame_id), height=h, width=w, encoding='rgb8',
                is_bigendian=0, step=3 * w)
    msg.data = rgb.tobytes()
    return msg


def jpeg_msg(rgb: np.ndarray, stamp: Time | int, frame_id: str = CAMERA_FRAME,
             quality: int = 85) -> CompressedImage:
    """uint8 (H, W, 3) RGB -> sensor_msgs/CompressedImage, format 'jpeg'."""
    import cv2

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'image must be uint8 (H, W, 3), got shape {rgb.shape}')
    ok, buf = cv2.imencode('.jpg', rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError('JPEG encoding failed')
    msg = CompressedImage(header=make_header(stamp, frame_id), format='jpeg')
    msg.data = buf.tobytes()
    return msg


def compressed_array(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png) -> uint8 (H, W, 3) RGB."""
    import cv2

    img = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f'compressed image ({msg.format!r}, {len(msg.data)} bytes) cannot be '
                         'decoded; send jpeg or png')
    return np.ascontiguousarray(img[:, :, ::-1])


def image_array(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (rgb8 or bgr8) -> uint8 (H, W, 3) RGB."""
    if msg.encoding not in ('rgb8', 'bgr8'):
        raise ValueError(f'image encoding {msg.encoding!r} unsupported; publish rgb8 or bgr8')
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    rows = buf.reshape(msg.height, msg.step)[:, :3 * msg.width]
    rgb = rows.reshape(msg.height, msg.width, 3)
    return rgb[..., ::-1].copy() if msg.encoding == 'bgr8' else rgb.copy()


def camera_info_msg(width: int, height: int, k: np.ndarray, stamp: Time | int,
                    frame_id: str = CAMERA_FRAME) -> CameraInfo:
    """Pinhole intrinsics K (3, 3) for an undistorted (width x height) image -> CameraInfo."""
    k = np.asarray(k, dtype=np.float64).reshape(3, 3)
    msg = CameraInfo(header=make_header(stamp, frame_id), width=int(width), height=int(height),
                     distortion_model='plumb_bob')
    msg.d = [0.0] * 5
    msg.k = k.ravel().tolist()
    msg.r = np.eye(3).ravel().tolist()
    p = np.zeros((3, 4))
    p[:, :3] = k
    msg.p = p.ravel().tolist()
    return msg


def camera_k(msg: CameraInfo) -> np.ndarray:
    """CameraInfo -> intrinsics K (3, 3) float64."""
    return np.asarray(msg.k, dtype=np.float64).reshape(3, 3)


# --------------------------------------------------------------------------- snapshot
def snapshot_from_msgs(joint_state: JointState, ee_pose: PoseStamped, object_pose: PoseStamped,
                       ee_wrench: WrenchStamped | None = None) -> ContractSnapshot:
    """Latest contract messages -> ``observation.ContractSnapshot`` for the ObservationBuilder.

    Finger efforts are used when ``joint_state`` carries an effort per joint; otherwise the
    builder falls back to ``ee_wrench`` (pass it).
    """
    efforts = (np.asarray(joint_state.effort, dtype=np.float64)
               if len(joint_state.effort) == len(joint_state.name) else None)
    ee_pos, ee_quat = pose_arrays(ee_pose)
    block_pos, block_quat = pose_arrays(object_pose)
    force = wrench_arrays(ee_wrench)[0] if ee_wrench is not None else None
    return ContractSnapshot(
        joint_names=tuple(joint_state.name),
        joint_positions=np.asarray(joint_state.position, dtype=np.float64),
        joint_efforts=efforts, wrench_force=force,
        ee_pos=ee_pos, ee_quat=ee_quat, ee_stamp_ns=stamp_ns(ee_pose.header.stamp),
        block_pos=block_pos, block_quat=block_quat,
        block_stamp_ns=stamp_ns(object_pose.header.stamp))
