"""The supervised actor runtime (pykka underneath, kameo semantics on top).

Public API::

    system = ActorSystem("device-1", clock=None, tracer=None, dispatcher="thread"|"pool")
    ref = system.spawn(MyActor, *args, name="x", mailbox=MailboxConfig(100, MailboxPolicy.FAIL),
                       restart=Restart.TRANSIENT, parent=sup_ref, dispatcher="pool")
    ref.tell(msg); ref.ask(msg, timeout=1.0); await ref.ask_async(msg, timeout=1.0)
    system.lookup("x"); system.shutdown()

See ``actor`` (hooks, ``@handles``), ``supervisor`` (child specs, strategies, budget), ``mailbox``
(bounds and policies), ``clock`` (``ManualClock``), ``trace``/``replay`` and ``faults``.
"""

from pytsnet.actors.runtime.actor import Actor, PanicAction, StopKind, StopReason, handles
from pytsnet.actors.runtime.clock import Clock, ManualClock, SystemClock, TimerHandle
from pytsnet.actors.runtime.errors import (
    ActorError,
    ActorStartError,
    ActorStopped,
    AskTimeout,
    HandlerError,
    Killed,
    LinkDied,
    MailboxFull,
    NameTaken,
    RestartBudgetExceeded,
    UnhandledMessage,
)
from pytsnet.actors.runtime.faults import FaultInjector
from pytsnet.actors.runtime.mailbox import Backlog, MailboxConfig, MailboxPolicy
from pytsnet.actors.runtime.ref import ActorRef
from pytsnet.actors.runtime.supervisor import (
    ChildSpec,
    Restart,
    Strategy,
    Supervisor,
    SupervisorConfig,
    supervisor_spec,
)
from pytsnet.actors.runtime.system import ActorSystem
from pytsnet.actors.runtime.trace import Tracer

__all__ = [
    "Actor", "ActorError", "ActorRef", "ActorStartError", "ActorStopped", "ActorSystem", "AskTimeout",
    "Backlog", "ChildSpec", "Clock", "FaultInjector", "HandlerError", "Killed", "LinkDied", "MailboxConfig",
    "MailboxFull", "MailboxPolicy", "ManualClock", "NameTaken", "PanicAction", "Restart",
    "RestartBudgetExceeded", "StopKind", "StopReason", "Strategy", "Supervisor", "SupervisorConfig",
    "SystemClock", "TimerHandle", "Tracer", "UnhandledMessage", "handles", "supervisor_spec",
]
