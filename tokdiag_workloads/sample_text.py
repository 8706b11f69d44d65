"""Sample text written for tokdiag, so workloads count tokens of real prose, code and Chinese.

:data:`SAMPLE_TEXT` is English prose, Python code and Chinese prose, 3,524
bytes of UTF-8; :func:`sample_texts` gives the three parts.
"""

from __future__ import annotations

__all__ = ["SAMPLE_TEXT", "sample_texts"]


_ENGLISH = """\
The service had been running for eleven days when the first alert arrived. Memory on the
agent workers climbed by a few megabytes an hour, never fast enough to look alarming on a
dashboard, always fast enough to end in a restart at three in the morning. Each engineer on
the team had a theory. One blamed the tokenizer: every request seemed to build a fresh
encoder, and an encoder with a hundred thousand entries is not small. Another blamed the
message bus, which kept every event it had ever delivered so that a debugging page could
replay a conversation. A third suspected the browser tool, whose page snapshots were large
and were written into the agent's memory as raw bytes.

Arguments like this rarely end with someone being persuaded. They end when somebody runs the
workload for a thousand steps, takes a snapshot every ten, and draws one line per owner.
A cache that fills and then stops is not a leak, however large it is; a dictionary that gains
one small entry per request is a leak, however small each entry looks. The interesting cases
sit in between: a vocabulary loaded once per worker thread, an object that is released by
the program but kept alive by a forgotten reference in a log handler, a native buffer that
Python's own accounting never sees.

Good measurement is boring to read and easy to repeat. It names the workload, the number of
steps, the interval between snapshots and the machine. It reports what it could not see as
plainly as what it could. And it leaves the process as it found it, because a measuring tool
that keeps its own samples alive will, sooner or later, measure itself.
"""

_CODE = '''\
import threading
from dataclasses import dataclass, field


@dataclass
class EventBus:
    """Deliver events to subscribers and keep a bounded history for replay."""

    max_history: int = 1000
    _history: list[dict] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, topic: str, payload: dict) -> int:
        with self._lock:
            self._history.append({"topic": topic, "payload": payload})
            if len(self._history) > self.max_history:
                del self._history[: len(self._history) - self.max_history]
            return len(self._history)


def count_tokens(encoder, messages: list[dict[str, str]]) -> int:
    total = 0
    for message in messages:
        total += 3  # every message carries role and separator tokens
        for key, value in message.items():
            total += len(encoder.encode(value, disallowed_special=()))
            if key == "name":
                total += 1
    return total + 3
'''

_CHINESE = """\
这个服务已经连续运行了十一天,内存每小时只增长几兆字节,看起来并不紧急,
却总会在凌晨三点导致进程被系统强制重启。团队里每个人都有自己的猜测:
有人认为是分词器每次请求都重新加载词表,有人认为是消息总线保存了所有历史事件,
还有人怀疑浏览器工具把整页快照写进了智能体的记忆。争论很少因为说服而结束,
只有当有人真正运行一千步、每十步记录一次内存、把每个持有者画成一条曲线时,
答案才会变得清楚。一个装满之后就停止增长的缓存并不是泄漏;
一个每次请求都增加一个小条目的字典才是泄漏,哪怕每个条目看起来都很小。
好的测量应当可以重复:写明工作负载、步数、采样间隔和机器,
并且像报告看得见的部分一样,坦白地报告它看不见的部分。
"""

_SAMPLES: tuple[str, ...] = (_ENGLISH, _CODE, _CHINESE)

SAMPLE_TEXT: str = "\n\n".join(_SAMPLES)
"""English prose, Python code and Chinese prose (3,524 bytes of UTF-8), written for tokdiag."""


def sample_texts() -> tuple[str, ...]:
    """The parts of :data:`SAMPLE_TEXT`: ``(english, python_code, chinese)``."""
    return _SAMPLES
