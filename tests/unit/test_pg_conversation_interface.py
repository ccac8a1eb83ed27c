"""The PostgreSQL conversation's dependencies are the typed interfaces it declares, exactly.

`ConversationSession` (conversation.py) names what a conversation, its extended
handlers and its fast lane use of their session; `StreamConversation` (stream.py)
what the target stream uses of its conversation. A use the interface does not name,
or a name nothing uses any more, fails here, and so does a session that lacks one.
"""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

from app.relay.postgres import session as pg_session
from app.relay.postgres.conversation import ConversationSession
from app.relay.postgres.stream import StreamConversation
from app.relay.session import RelaySession

POSTGRES = Path(pg_session.__file__).parent


def _uses(files: tuple[str, ...], holder: str) -> set[str]:
    """Attributes read of `holder`, as a bare name or as `self.<holder>` / `conv.<holder>`."""
    names = set()
    for file in files:
        for node in ast.walk(ast.parse((POSTGRES / file).read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id == holder:
                names.add(node.attr)
            elif isinstance(owner, ast.Attribute) and owner.attr == holder and isinstance(owner.value, ast.Name):
                names.add(node.attr)
    return names


def _instance_attributes(cls: type) -> set[str]:
    """What `__init__` of the class and its bases assigns to `self`."""
    names = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or not inspect.isfunction(init):
            continue
        tree = ast.parse(inspect.getsource(init).strip())
        names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                  and isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name) and node.value.id == "self"}
    return names


def test_the_conversation_uses_exactly_what_conversation_session_names():
    used = _uses(("conversation.py", "extended.py", "fastlane.py"), "session")
    assert used == set(ConversationSession.__protocol_attrs__)


def test_the_postgres_session_provides_everything_the_conversation_needs():
    session = pg_session.Session
    provided = _instance_attributes(session) | {name for name in dir(session)}
    assert set(ConversationSession.__protocol_attrs__) <= provided
    # The statement checker it hands out is the core's, reading the session as a RelaySession.
    assert issubclass(session, RelaySession)


def test_the_target_stream_uses_exactly_what_stream_conversation_names():
    used = _uses(("stream.py", "answers.py"), "conversation")
    assert used == set(StreamConversation.__protocol_attrs__)
