"""Streams log records to control connections that sent LOG (`18 15 <level> <color>`).

Owns the set of subscribed control writers and their levels. It is a logging.Handler on the
root logger, so every record the daemon's process logs reaches it; records logged through
Daemon.log carry tinc's debug level in `record.tinc_level`, others count as level -1
(tinc's DEBUG_ALWAYS). Runs on the event loop thread only; never blocks: a subscriber whose
transport buffer is over BUFFER_LIMIT misses records until it drains.
"""
import logging
import time

from tincapp import control

BUFFER_LIMIT = 256 * 1024
DEBUG_ALWAYS = -1

_PRIORITY = {logging.CRITICAL: "CRITICAL", logging.ERROR: "ERROR", logging.WARNING: "WARNING",
             logging.INFO: "INFO", logging.DEBUG: "DEBUG"}


class ControlLogHandler(logging.Handler):
    def __init__(self, debug_level):
        super().__init__(level=logging.DEBUG)
        self._debug_level = debug_level        # callable: the daemon's current level
        self._subscribers = {}                  # writer -> (level, color)
        self._busy = False
        self.dropped = 0

    def subscribe(self, writer, level, color):
        """Called when a control connection sent LOG."""
        self._subscribers[writer] = (level, color)

    def unsubscribe(self, writer):
        self._subscribers.pop(writer, None)

    def _effective(self, level):
        return self._debug_level() if level == control.DEBUG_UNSET else level

    def wants(self, tinc_level):
        """Whether any subscriber takes records of `tinc_level` (so Daemon.log formats a
        record the daemon's own level would skip, as tinc's logcontrol does)."""
        return any(tinc_level <= self._effective(lvl) for lvl, _ in self._subscribers.values())

    def emit(self, record):
        # COMPAT: logger.c suppresses recursion (a log line caused by sending a log line).
        if self._busy or not self._subscribers:
            return
        self._busy = True
        try:
            tinc_level = getattr(record, "tinc_level", DEBUG_ALWAYS)
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
            priority = _PRIORITY.get(record.levelno, "UNKNOWN")
            message = record.getMessage()
            frames = {}
            for writer, (level, color) in list(self._subscribers.items()):
                if tinc_level > self._effective(level):
                    continue
                if writer.is_closing():
                    self.unsubscribe(writer)
                    continue
                if writer.transport.get_write_buffer_size() > BUFFER_LIMIT:
                    self.dropped += 1
                    continue
                if color not in frames:
                    frames[color] = control.log_frame(
                        control.format_log_text(when, priority, message, color))
                writer.write(frames[color])
        except Exception:
            self.handleError(record)
        finally:
            self._busy = False
