"""The command phase: every command the client sends, one at a time.

Text queries and prepared statements are classified (app/sql/mysql.py, in the session's
sql_mode) and each statement passes the gate before anything reaches the target; the
target's answer comes back through answer.py (masked, recorded). An execute of a prepared
statement that the gate allowed outright before, under the same stamp, reuses that
verdict (PreparedVerdicts, app/gate/session_shapes.py: no rule reads parameters); it is
still recorded with its parameters. Refused whatever the policy says: a character set
that is not ASCII-safe, LOAD DATA LOCAL, USE of another database, cursors,
COM_CHANGE_USER and commands the relay does not know.
"""
from __future__ import annotations

import asyncio
import logging
import struct
import time
from dataclasses import replace

from app.binding import sql_binding
from app.sql.mysql import classify_mysql
from app.sql.mysql_lexer import LexError, lex, literal, name as lex_name
from app.types import Operation, Verdict

from . import answer as answers
from . import lane as fast_lane
from . import plain, rows, wire
from .front import LoginRefused
from .params import Prepared, parse_execute
from app.gate.session_shapes import PreparedVerdicts, SessionShapes

log = logging.getLogger(__name__)
_UTF8 = ("utf8", "utf8mb3", "utf8mb4")
_STATEFUL = ("tcl", "admin", "dcl")  # statements after which the server's sql_mode or charset may differ


class SessionOver(Exception):
    pass


class Commands:
    def __init__(self, session):
        self.s = session
        self.link = session.link
        self.limit = session.cfg.max_message
        self.stmts: dict[int, Prepared] = {}
        self.statements = self.refused = 0
        self.remembered = 0  # executes that reused a prepared statement's verdict (the session's summary)
        self.shapes = SessionShapes(session.gate)
        self.verdicts = PreparedVerdicts(session.gate)  # the gate's verdicts by prepared statement id
        self._decided: tuple | None = None  # (operation, verdict) of the last single statement decided
        self.waiting = False  # at the top of the loop, before any byte of the next command (lane.py)
        self.stale = False  # the lane saw the server's backslash mode change: read the state first

    async def run(self) -> None:
        handlers = {wire.COM_QUERY: self._query, wire.COM_STMT_PREPARE: self._prepare,
                    wire.COM_STMT_EXECUTE: self._execute, wire.COM_STMT_SEND_LONG_DATA: self._long_data,
                    wire.COM_STMT_CLOSE: self._close, wire.COM_STMT_RESET: self._passthrough,
                    wire.COM_PING: self._passthrough, wire.COM_INIT_DB: self._init_db,
                    wire.COM_SET_OPTION: self._set_option, wire.COM_RESET_CONNECTION: self._reset}
        lane = fast_lane.Lane(self) if fast_lane.enabled() else None
        try:
            while True:
                self.waiting = True
                payload = await wire.read_payload(self.s.reader, self.limit)
                self.waiting = False
                if self.stale:
                    self.stale = False
                    await self._state()
                if not payload:
                    raise wire.ProtocolError("an empty command")
                if payload[0] == wire.COM_QUIT:
                    return
                handler = handlers.get(payload[0])
                if handler is None:
                    self._refuse(1047, f"airlock: command 0x{payload[0]:02x} is not relayed", "08S01")
                    continue
                await handler(payload)
                await self.s.writer.drain()
                if self.s.grant_lost is not None:
                    self.s.end()  # the grant went while that command was decided: its answer said so
                    return
        except (ConnectionError, asyncio.IncompleteReadError, SessionOver):
            pass
        except wire.ProtocolError as exc:
            log.info("mysql session %s: %s; closing it", self.s.client_addr, exc)
            self.s.refuse(1835, f"airlock: malformed packet ({exc}); the connection is closed", "08S01")
        finally:
            self.waiting = False
            if lane is not None:
                lane.close()
            self.s.summary = {"statements": self.statements, "refused": self.refused,
                              "remembered": self.remembered, "fast_lane": lane.taken if lane is not None else 0}

    # -- text queries -----------------------------------------------------------------

    async def _query(self, payload: bytes) -> None:
        self.statements += 1
        await self._token()
        text = self._decode(payload[1:])
        if text is None:
            return
        shape = self.shapes.lookup(text)
        if shape is not None:  # a plain read or write of a shape allowed before: nothing else to decide
            status = await self._send(payload, text, binary=False, masks=shape.masks,
                                      rules=[shape.rule] if shape.rule else [])
            if bool(status & wire.NO_BACKSLASH_ESCAPES) != self.s.mode.no_backslash_escapes:
                await self._state()
            return
        statements = classify_mysql(text, self.s.mode)
        stamp = self.s.gate.stamp()
        decided = await self._decide(statements)
        if decided is None:
            return
        masks, rules = decided
        if len(statements) == 1 and stamp == self.s.gate.stamp():
            self.shapes.remember(text, *self._decided, stamp, self.s.principal)
        payload = self._use_target_db(statements, payload)
        if payload is None:
            return
        for st in statements:
            self._run_id(st.text)
        status = await self._send(payload, text, binary=False, masks=masks, rules=rules)
        await self._after(statements, status)

    # -- prepared statements ----------------------------------------------------------

    async def _prepare(self, payload: bytes) -> None:
        self.statements += 1
        await self._token()
        text = self._decode(payload[1:])
        if text is None:
            return
        statements = classify_mysql(text, self.s.mode)
        if len(statements) != 1:
            return self._refuse(1064, "airlock: a prepared statement is exactly one statement", "42000", text)
        if statements[0].text.split(None, 1)[0].upper() == "USE":
            return self._refuse(1295, "airlock: USE is not prepared through the relay", "HY000", text)
        decided = await self._decide(statements, defer=True)
        if decided is None:
            return
        masker = self.s.gate.masker(tuple(decided[0])) if decided[0] else None
        self.link.writer.write(wire.frame(payload, 0)[0])
        out = wire.Framer(self.s.writer, 1)
        first = await wire.read_payload(self.link.reader, self.limit)
        out.add(first)
        if first[:1] != b"\x00":
            return await out.flush()
        stmt_id, columns, params = struct.unpack_from("<IHH", first, 1)
        for _ in range(params):
            out.add(await wire.read_payload(self.link.reader, self.limit))
        if params:
            out.add(await wire.read_payload(self.link.reader, self.limit))
        defs = [rows.parse_column(await wire.read_payload(self.link.reader, self.limit)) for _ in range(columns)]
        for definition in rows.definitions(rows.plan(masker, defs)):
            out.add(definition)
        if columns:
            out.add(await wire.read_payload(self.link.reader, self.limit))
        await out.flush()
        self.verdicts.forget(stmt_id)  # an id the server gave again is another statement
        self.stmts[stmt_id] = Prepared(text, statements, params, columns)

    async def _execute(self, payload: bytes) -> None:
        self.statements += 1
        await self._token()
        stmt_id = struct.unpack_from("<I", payload, 1)[0] if len(payload) >= 5 else None
        stmt = self.stmts.get(stmt_id)
        if stmt is None:
            return self._refuse(1243, "airlock: unknown prepared statement")
        flags, raw, shown = parse_execute(payload, stmt)
        if flags & 0x07:
            return self._refuse(1235, "airlock: server-side cursors are not relayed; fetch the whole result",
                                "42000", stmt.sql)
        remembered = self.verdicts.lookup(stmt_id)
        if remembered is not None:  # allowed outright under the same stamp: the parameters change nothing
            stmt.long_data.clear()
            self.remembered += 1
            masks, rules = (), [remembered.rule] if remembered.rule else []
        else:
            stamp = self.s.gate.stamp()
            decided = await self._decide(stmt.statements, raw=raw, shown=shown, types=stmt.types)
            stmt.long_data.clear()  # the server forgets them after an execute too
            if decided is None:
                return
            masks, rules = decided
            if len(stmt.statements) == 1 and stamp is not None and stamp == self.s.gate.stamp():
                self.verdicts.remember(stmt_id, *self._decided, stamp)
        status = await self._send(payload, stmt.sql, binary=True, masks=masks, rules=rules, params=shown)
        await self._after(stmt.statements, status)

    async def _long_data(self, payload: bytes) -> None:
        if len(payload) < 7:
            raise wire.ProtocolError("a short COM_STMT_SEND_LONG_DATA")
        stmt_id, param = struct.unpack_from("<IH", payload, 1)
        stmt = self.stmts.get(stmt_id)
        if stmt is not None and param < stmt.params:
            stmt.long_data.setdefault(param, bytearray()).extend(payload[7:])
            self.link.writer.write(wire.frame(payload, 0)[0])  # no answer, by the protocol

    async def _close(self, payload: bytes) -> None:
        if len(payload) >= 5:
            stmt_id = struct.unpack_from("<I", payload, 1)[0]
            self.stmts.pop(stmt_id, None)
            self.verdicts.forget(stmt_id)
        self.link.writer.write(wire.frame(payload, 0)[0])  # no answer, by the protocol

    # -- the small commands -----------------------------------------------------------

    async def _passthrough(self, payload: bytes) -> bytes:
        """A command answered by one packet (OK, EOF or ERR)."""
        if payload[0] == wire.COM_STMT_RESET and len(payload) >= 5:
            # The statement's text stays as prepared: its remembered verdict does too (the
            # reset drops long data and a cursor, parameters that no verdict depends on;
            # mysql-connector resets before every execute).
            stmt = self.stmts.get(struct.unpack_from("<I", payload, 1)[0])
            if stmt is not None:
                stmt.long_data.clear()
        self.link.writer.write(wire.frame(payload, 0)[0])
        reply = await wire.read_payload(self.link.reader, self.limit)
        self.s.writer.write(wire.frame(reply, 1)[0])
        return reply

    async def _init_db(self, payload: bytes) -> None:
        name = payload[1:].decode("utf-8", "replace")
        if name not in (self.s.dbname, self.s.target_db):
            return self._refuse(1044, f"airlock: this session is for connection '{self.s.dbname}'; "
                                      f"database '{name}' is not", "42000")
        await self._passthrough(bytes((wire.COM_INIT_DB,)) + self.s.target_db.encode())

    async def _set_option(self, payload: bytes) -> None:
        reply = await self._passthrough(payload)
        if reply[:1] != b"\xff" and len(payload) >= 3:
            self.s.multi = struct.unpack_from("<H", payload, 1)[0] == 0

    async def _reset(self, payload: bytes) -> None:
        await self._passthrough(payload)
        self.stmts.clear()
        self.verdicts.clear()
        await self._state()

    # -- shared steps -----------------------------------------------------------------

    async def _token(self) -> None:
        if not await self.s.check_token():
            self.forget()
            self.s.refuse(1045, "airlock: the session's token is no longer valid", "28000")
            raise SessionOver()

    def _decode(self, data: bytes) -> str | None:
        try:
            return data.decode("utf-8") if self.s.charset in _UTF8 else data.decode("latin-1")
        except UnicodeDecodeError:
            self._refuse(1366, f"airlock: the statement is not valid {self.s.charset}", "HY000")
            return None

    async def _decide(self, statements, *, raw=(), shown=(), types=b"", defer=False):
        """Every statement through the gate; (masks, rules) when all may run, else None
        (the client has been told why)."""
        if len(statements) > 1 and not self.s.multi:
            return self._refuse(1064, "airlock: several statements in one query, but the client did not "
                                      "enable multi-statements", "42000", statements[0].text)
        masks, rules = [], []
        for st in statements:
            why = _always_refused(st.attributes)
            if why is not None:
                return self._refuse(*why, st.text)
            op = Operation(protocol="mysql", connection=self.s.dbname, kind=st.kind, text=st.text,
                           targets=st.tables + st.functions, attributes=st.attributes,
                           fingerprint=st.fingerprint, params=tuple(shown))
            op = replace(op, binding=sql_binding(op, list(raw), types=list(types)))
            self.s.deciding += 1
            try:
                verdict = await self.s.gate.decide(self.s.principal, op, recording=self.s.rec, run_id=self.s.run_id,
                                                   gone=self.s.gone, record_allows=False, defer_review=defer)
            finally:
                self.s.deciding -= 1
            self._decided = (op, verdict)
            if verdict.action == "allow" or verdict.status == "deferred":
                masks.extend(verdict.masks)
                if verdict.rule:
                    rules.append(verdict.rule)
                continue
            if verdict.status == "withdrawn":
                raise SessionOver()  # the client left while the statement was held: nothing ran
            return self._refuse(*_verdict_error(verdict), st.text)
        return masks, rules

    def _use_target_db(self, statements, payload: bytes) -> bytes | None:
        """USE may name this session's connection (or its target database) only; the
        connection's name becomes the target database's."""
        for st in statements:
            try:
                toks = lex(st.text, self.s.mode)[0]
            except LexError:
                continue
            if toks and toks[0].up == "USE":
                name, _ = lex_name(toks, 1)
                if name not in (self.s.dbname, self.s.target_db):
                    return self._refuse(1044, f"airlock: this session is for connection '{self.s.dbname}'; "
                                              f"database '{name}' is not", "42000", st.text)
                if name != self.s.target_db:
                    if len(statements) > 1:
                        return self._refuse(1044, "airlock: USE of the connection's name must be a query of its "
                                                  "own", "42000", st.text)
                    quoted = self.s.target_db.replace("`", "``")
                    return bytes((wire.COM_QUERY,)) + f"USE `{quoted}`".encode()
        return payload

    def _run_id(self, text: str) -> None:
        try:
            toks = lex(text, self.s.mode)[0]
        except LexError:
            return
        if len(toks) == 4 and toks[0].up == "SET" and toks[1].up == "@AIRLOCK_RUN" and toks[2].text in ("=", ":=") \
                and toks[3].kind == "str":
            self.s.tag_run(literal(toks[3], self.s.mode))

    async def _send(self, payload: bytes, sql: str, *, binary: bool, masks, rules, params=None) -> int:
        """Run the command on the target, answer the client and record it; the answer's
        last status flags. Unmasked answers pass through unchanged (plain.py)."""
        self.link.writer.write(wire.frame(payload, 0)[0])
        sample_rows = self.s.cfg.record_rows
        if masks:
            answer = await answers.relay(self.link.reader, wire.Framer(self.s.writer, 1), binary=binary,
                                         masker=self.s.gate.masker(tuple(masks)), sample_rows=sample_rows,
                                         limit=self.limit)
            self._record(sql, answer, rules, masks, params)
            return answer.status
        t0 = time.perf_counter()
        walk = plain.PlainAnswer(sample_rows, self.limit)
        await plain.relay(self.link.reader, self.s.writer, walk)
        if self.s.rec is not None:  # the writer process builds the event from the packets kept
            self.s.rec.event_later("output", plain.render_output, sql, round((time.perf_counter() - t0) * 1000, 3),
                                   rules[0] if rules else None, [], None if params is None else list(params),
                                   walk.kept, binary, sample_rows)
        return walk.status

    async def _after(self, statements, status: int) -> None:
        """Follow the server's sql_mode and character set when a statement may have changed them."""
        reported = bool(status & wire.NO_BACKSLASH_ESCAPES)
        if reported != self.s.mode.no_backslash_escapes or any(
                st.kind in _STATEFUL or st.text[:4].upper() in ("CALL", "EXEC") for st in statements):
            await self._state()

    def forget(self) -> None:
        """Every verdict remembered (the text shapes and the prepared statements')."""
        self.shapes.clear()
        self.verdicts.clear()

    async def _state(self) -> None:
        self.forget()
        try:
            await self.s.read_server_state()
        except LoginRefused as exc:
            self.s.refuse(exc.code, exc.message + "; the connection is closed", exc.sqlstate, seq=0)
            raise SessionOver() from None

    def _record(self, sql: str, answer, rules, masks, params=None) -> None:
        if self.s.rec is not None:
            event = answers.output_event(sql, answer, rules[0] if rules else None,
                                         sorted({m.rule for m in masks}), params)
            self.s.rec.event("output", event)

    def _refuse(self, code: int, message: str, sqlstate: str = "HY000", text: str | None = None) -> None:
        self.refused += 1
        self.s.refuse(code, message, sqlstate)
        if self.s.rec is not None and text is not None:
            self.s.rec.event("output", {"sql": text, "error": {"code": code, "message": message}})
        return None


def _always_refused(attributes) -> tuple[int, str, str] | None:
    if "unsafe_charset" in attributes:
        return (1115, "airlock: this character set is refused: a byte below 0x80 can be part of one of its "
                      "characters, so airlock could not read statements as the server does", "42000")
    if "load_data_local" in attributes:
        return 1148, "airlock: LOAD DATA LOCAL INFILE is refused (the relay does not send client files)", "42000"
    return None


def _verdict_error(v: Verdict) -> tuple[int, str, str]:
    if v.action == "review":
        return (1142, f"airlock: review {v.review_id} (rule {v.rule}) is still pending: {v.review_url} ; "
                      f"retry after it is approved (in {v.retry_after}s or later)", "42000")
    if v.status == "error":
        return 1105, f"airlock: {v.message}", "HY000"
    if v.status in ("rejected", "expired"):
        return 1142, f"airlock: rule {v.rule}: {v.message}", "42000"
    return 1142, f"airlock: denied by rule {v.rule}: {v.message or 'not allowed'}", "42000"
