"""MCAP recording of ROS 2 topics, readable by `ros2 bag`, Foxglove and the mcap tools.

Messages are written as the raw CDR bytes DDS delivered (``raw=True`` subscriptions), with the
``ros2msg`` schema text rosbag2 writes: the type's .msg definition followed by every nested type's
definition after a ``====`` separator line. Schema text is read from the ``share/<pkg>/msg``
folders that every ROS 2 message package installs (found with ament_index), so any message type
on the ROS path can be recorded. No rclpy here: ``TopicRecorder`` takes bytes and timestamps;
the node wrapper (``selfalign_bringup.monitor_node``) subscribes and feeds it.

A process killed with SIGKILL cannot write the summary and footer that close a file. The node
calls ``TopicRecorder.flush`` every few seconds, so what came before the last flush is on disk
as complete chunks, and ``recover`` rewrites such a file into a complete one (the monitor does
it for the earlier parts of a run it resumes).
"""

from __future__ import annotations

import os
from pathlib import Path
import re
import threading

from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType, Writer

#: Last bytes of every complete MCAP file.
MCAP_MAGIC = b'\x89MCAP0\r\n'

_PRIMITIVES = {
    'bool', 'byte', 'char', 'float32', 'float64', 'int8', 'uint8', 'int16', 'uint16', 'int32',
    'uint32', 'int64', 'uint64', 'string', 'wstring',
}


def _share_dirs() -> list[Path]:
    dirs = []
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / 'share')
    return dirs


def _msg_file(pkg: str, name: str) -> Path:
    for share in _share_dirs():
        path = share / pkg / 'msg' / f'{name}.msg'
        if path.is_file():
            return path
    raise FileNotFoundError(
        f'no definition for {pkg}/msg/{name} under AMENT_PREFIX_PATH; source the workspace '
        '(scripts/env.sh or install/setup.bash) before recording')


def _field_types(text: str, pkg: str) -> list[tuple[str, str]]:
    """(package, name) of every non-primitive field type in a .msg text."""
    out = []
    for line in text.splitlines():
        line = line.split('#', 1)[0].strip()
        if not line or '=' in line.split()[0]:
            continue
        typ = re.sub(r'\[.*?\]$', '', line.split()[0])
        typ = re.sub(r'<=\d+$', '', typ)
        if typ in _PRIMITIVES:
            continue
        if typ == 'Header':
            out.append(('std_msgs', 'Header'))
        elif '/' in typ:
            parts = typ.split('/')
            out.append((parts[0], parts[-1]))
        else:
            out.append((pkg, typ))
    return out


def schema_text(type_name: str) -> str:
    """Full ros2msg schema for 'pkg/msg/Name' (or 'pkg/Name'), as rosbag2 writes it."""
    parts = type_name.split('/')
    pkg, name = parts[0], parts[-1]
    root = _msg_file(pkg, name).read_text()
    seen: set[tuple[str, str]] = {(pkg, name)}
    order: list[tuple[str, str, str]] = []
    queue = _field_types(root, pkg)
    while queue:
        dep = queue.pop(0)
        if dep in seen:
            continue
        seen.add(dep)
        text = _msg_file(*dep).read_text()
        order.append((dep[0], dep[1], text))
        queue.extend(_field_types(text, dep[0]))
    sep = '=' * 80
    chunks = [root.rstrip('\n')]
    chunks += [f'{sep}\nMSG: {p}/{n}\n{t.rstrip(chr(10))}' for p, n, t in order]
    return '\n'.join(chunks) + '\n'


class TopicRecorder:
    """Thread-safe MCAP writer for raw CDR messages of several topics."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, 'wb')  # noqa: SIM115 - closed in close()
        self._writer = Writer(self._file, compression=CompressionType.ZSTD)
        self._writer.start(profile='ros2', library='selfalign')
        self._channels: dict[str, int] = {}
        self._schemas: dict[str, int] = {}
        self._seq: dict[str, int] = {}
        self._lock = threading.Lock()
        self.count = 0

    def add_topic(self, topic: str, type_name: str) -> None:
        """Register a topic of ROS type 'pkg/msg/Name' before writing to it."""
        with self._lock:
            if topic in self._channels:
                return
            if type_name not in self._schemas:
                self._schemas[type_name] = self._writer.register_schema(
                    name=type_name, encoding='ros2msg', data=schema_text(type_name).encode())
            self._channels[topic] = self._writer.register_channel(
                topic=topic, message_encoding='cdr', schema_id=self._schemas[type_name])
            self._seq[topic] = 0

    def write(self, topic: str, cdr: bytes, log_time_ns: int, publish_time_ns: int | None = None
              ) -> None:
        """Append one serialised message (CDR bytes as received from DDS)."""
        with self._lock:
            if self._file.closed:
                return
            self._writer.add_message(
                channel_id=self._channels[topic], log_time=log_time_ns, data=cdr,
                publish_time=publish_time_ns if publish_time_ns is not None else log_time_ns,
                sequence=self._seq[topic])
            self._seq[topic] += 1
            self.count += 1

    def flush(self) -> None:
        """Write what is buffered as complete chunks (a later SIGKILL loses nothing before)."""
        with self._lock:
            if not self._file.closed:
                self._writer.flush()

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._writer.finish()
                self._file.close()


def is_complete(path: str | os.PathLike) -> bool:
    """True when the file ends like a closed MCAP file (summary and footer written)."""
    path = Path(path)
    size = path.stat().st_size
    if size < 2 * len(MCAP_MAGIC):
        return False
    with open(path, 'rb') as fh:
        fh.seek(size - len(MCAP_MAGIC))
        return fh.read() == MCAP_MAGIC


def recover(path: str | os.PathLike) -> int:
    """Rewrite an MCAP file that a killed process left open (no footer) into a complete one,
    keeping every message of its complete chunks; returns the number of messages kept. A
    complete file is left alone (returns -1). The rewrite is atomic (temp file, rename)."""
    path = Path(path)
    if is_complete(path):
        return -1
    tmp = path.with_name(path.name + '.recovering')
    kept = 0
    with open(path, 'rb') as src, open(tmp, 'wb') as dst:
        writer = Writer(dst, compression=CompressionType.ZSTD)
        writer.start(profile='ros2', library='selfalign (recovered)')
        schemas: dict[int, int] = {}
        channels: dict[int, int] = {}
        try:
            for record in StreamReader(src).records:
                if isinstance(record, Schema) and record.id not in schemas:
                    schemas[record.id] = writer.register_schema(
                        name=record.name, encoding=record.encoding, data=record.data)
                elif isinstance(record, Channel) and record.id not in channels:
                    channels[record.id] = writer.register_channel(
                        topic=record.topic, message_encoding=record.message_encoding,
                        schema_id=schemas.get(record.schema_id, 0), metadata=record.metadata)
                elif isinstance(record, Message) and record.channel_id in channels:
                    writer.add_message(channel_id=channels[record.channel_id],
                                       log_time=record.log_time, data=record.data,
                                       publish_time=record.publish_time,
                                       sequence=record.sequence)
                    kept += 1
        except Exception:  # noqa: BLE001 - the cut-off tail: keep what came before it
            pass
        writer.finish()
    os.replace(tmp, path)
    return kept
