"""``herald``: the command line.

    herald run            bridge and worker together (one machine)
    herald bridge         the webhook bridge only
    herald worker         the router and action agents only
    herald check-config   validate a config file; exit 0 only when Herald would start (--connect: Kafka too)
    herald kafka-local    start|stop|status a local single-node Kafka on 127.0.0.1
    herald render         render a template for an event file, without Kafka
    herald test-route     which routes an event matches, and what each action would receive
    herald timeline       a window of events per entity in event-time order (JSON Lines, CSV, HTML)
    herald replay         re-run recorded events through a config: counts, diff, or re-drive
    herald dlq            dead letters: list, show, redrive, purge
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml

from actions import load_config
from app.config.loader import Config, config_path
from app.errors import ConfigError, HeraldError
from app.telemetry.logformat import FORMATS, formatter, log_format
from app.redact import RedactingFilter

log = logging.getLogger("herald")


def setup_logging(debug: bool = False, fmt: str = "text") -> None:
    """``fmt``: ``text`` (one line per record) or ``json`` (one JSON object per line, ``app.telemetry.logformat``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # librdkafka's own log lines: warnings and up unless debugging
    logging.getLogger("herald.kafka.client").setLevel(logging.INFO if debug else logging.WARNING)


PROBE_TIMEOUT_S = 10.0


def _probe(config: Config) -> None:
    """Fail fast: connect to Kafka once with the configured security settings; a wrong password,
    an unknown CA, a plaintext client on a TLS/SASL listener or no broker at all raises
    KafkaConnectError (one line, exit 1) within seconds instead of librdkafka retrying forever."""
    from app.kafka.client import client_config, probe

    probe(client_config(config.herald), timeout=PROBE_TIMEOUT_S)


def _load(args: argparse.Namespace, kafka: bool = True, listens: bool = False) -> Config:
    """The config of a command; ``kafka``: the command needs Kafka, so probe it now; ``listens``:
    it runs the bridge, which refuses a non-loopback address without authentication."""
    path = config_path(getattr(args, "config", None))
    config = load_config(path)
    if getattr(args, "bootstrap", None):
        config.herald.kafka_bootstrap_servers = args.bootstrap
    for warning in config.warnings:
        log.warning("config: %s", warning)
    if listens:
        from app.ingest.bridge import exposure_problem

        problem = exposure_problem(config)
        if problem:
            raise ConfigError(problem)
    if kafka:
        _probe(config)
    return config


def _kafka_line(config: Config) -> str:
    """The Kafka settings on one line, secrets as ***."""
    parts = []
    for key, value in config.herald.kafka.described().items():
        if key == "properties":
            parts += [f"{k}={v}" for k, v in value.items()]
        else:
            parts.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    return f"kafka: {config.herald.kafka_bootstrap_servers} " + " ".join(parts)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    from app.routing.router import Router

    problems = []
    logging.getLogger("herald.templates").setLevel(logging.WARNING)  # replacements: printed below
    try:
        router = Router(config)
        problems = router.errors
        for package, files in router.library.replaced.items():
            print(f"template package {package}: built-in replaced by {', '.join(files)}")
    except HeraldError as exc:
        problems = [str(exc)]
    from app.ingest.bridge import exposure_problem, exposure_warning

    exposure = exposure_problem(config)
    if exposure:
        problems.append(exposure)
    elif exposure_warning(config):
        config.warnings.append(str(exposure_warning(config)))
    from agents.admin import admin_exposure_problem

    admin_exposure = admin_exposure_problem(config)  # the worker would not start either
    if admin_exposure:
        problems.append(admin_exposure)
    from app.routing.router import guard_warnings

    config.warnings.extend(guard_warnings(config))
    for warning in config.warnings:
        print(f"warning: {warning}")
    for problem in problems:
        print(f"error: {problem}")
    if problems:
        return 1
    from app.kafka.client import client_config, validate

    validate(client_config(config.herald))  # librdkafka's own checks, offline
    if args.connect:
        _probe(config)
    print(f"{args.file}: ok ({len(config.routes)} routes, {len(config.templates)} templates, "
          f"{len(config.actions)} enabled actions)")
    print(_kafka_line(config) + (" (connected)" if args.connect else ""))
    return 0


def cmd_bridge(args: argparse.Namespace) -> int:
    from app.ingest.bridge import run_bridge
    from app.errors import KafkaConnectError

    config = _load(args, kafka=False, listens=True)
    setup_logging(config.herald.debug, args.log_format)
    try:
        _probe(config)
    except KafkaConnectError as exc:
        # with a spool, a Kafka that is down is no reason not to take events (a wrong password or
        # an unknown CA still is: those fail now)
        if not (config.herald.spool.enabled and str(exc).startswith(_UNREACHABLE)):
            raise
        log.warning("starting without Kafka (%s): events go to the spool %s until it is reachable",
                    exc, config.herald.spool.dir)
    run_bridge(config, _reload_source(args, config))
    return 0


_UNREACHABLE = ("nothing is listening", "no broker reachable", "cannot resolve")


def _reload_source(args: argparse.Namespace, config: Config) -> Any:
    """How SIGHUP and POST /reload read the config again: the same file, the same --bootstrap."""
    def source() -> Config:
        fresh = load_config(config.path)
        if getattr(args, "bootstrap", None):
            fresh.herald.kafka_bootstrap_servers = args.bootstrap
        return fresh

    return source


def cmd_worker(args: argparse.Namespace) -> int:
    from agents.worker import run_worker

    config = _load(args)
    setup_logging(config.herald.debug, args.log_format)
    from app.routing.router import guard_warnings

    for warning in guard_warnings(config):  # the worker applies the guard: it warns, once per start
        log.warning("%s", warning)
    from agents.admin import admin_exposure_problem

    problem = admin_exposure_problem(config)
    if problem:
        raise ConfigError(problem)
    return run_worker(config, _reload_source(args, config))


def cmd_run(args: argparse.Namespace) -> int:
    """Bridge and worker as two child processes; SIGINT/SIGTERM stops both."""
    config = _load(args, listens=True)
    base = [sys.executable, "-m", "app.cli"]
    extra = ["--config", config.path] + (["--bootstrap", args.bootstrap] if args.bootstrap else [])
    extra += ["--log-format", args.log_format]
    procs = [subprocess.Popen(base + ["worker", *extra]), subprocess.Popen(base + ["bridge", *extra])]
    _say(args, f"Herald is starting: POST events to http://{config.herald.http_listen}/ "
         f"(Kafka {config.herald.kafka_bootstrap_servers}); Ctrl-C or kill {os.getpid()} stops it.")

    def stop(signum: int, frame: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    def reload(signum: int, frame: Any) -> None:  # both children re-read the config
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, reload)
    signal.signal(signal.SIGHUP, reload)
    import time

    while all(p.poll() is None for p in procs):  # one child dying stops the other
        time.sleep(0.2)
    stop(signal.SIGTERM, None)
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(30))
        except subprocess.TimeoutExpired:  # e.g. a worker still trying to reach a broker that is gone
            _say(args, f"pid {p.pid} did not stop within 30s; killing it")
            p.kill()
            codes.append(p.wait())
    return max(codes)


def _say(args: argparse.Namespace, text: str, level: int = logging.INFO) -> None:
    """A message for the operator on stderr: a log record in JSON mode (every line stays JSON)."""
    if getattr(args, "log_format", "text") == "json":
        log.log(level, "%s", text)
    else:
        print(text, file=sys.stderr, flush=True)


def cmd_kafka_local(args: argparse.Namespace) -> int:
    from app.devtools.kafka_local import LocalKafka

    k = LocalKafka(Path(args.state_dir), port=args.port, controller_port=args.port + 1, secured=args.secured)
    if args.op == "start":
        pid = k.start()
        print(f"Kafka running: pid {pid}, bootstrap {k.bootstrap}, logs {k.state_dir}")
        if k.secured:
            settings = {**k.client_settings(), "sasl-password": f"file:{k.password_file}"}
            print("SASL_SSL with SCRAM-SHA-512; in cfg.yaml:\n" + yaml.safe_dump(
                {"herald": {"kafka-bootstrap-servers": k.bootstrap, "kafka": settings}}, sort_keys=False).rstrip())
    elif args.op == "stop":
        print("stopped" if k.stop() else "not running")
    else:
        status = k.status()
        print(status)
        return 0 if status.startswith("running") else 3
    return 0


def _read_event(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise HeraldError(f"cannot read event file {path}: {exc.strerror}") from None


def cmd_render(args: argparse.Namespace) -> int:
    from app.routing.policy.engine import make_engine
    from app.routing.policy.templates import BUILTIN_TEMPLATE_DIR, PackageTemplate, TemplateLibrary

    if args.engine == "opa" and not args.opa_url:
        raise ConfigError("--engine opa needs --opa-url (e.g. http://127.0.0.1:8181)", "--opa-url")
    dirs = [BUILTIN_TEMPLATE_DIR] + [Path(d) for d in args.template_dir]
    library = TemplateLibrary(dirs, lambda: make_engine(args.engine, args.opa_url or ""))
    for package, files in library.replaced.items():
        print(f"note: built-in package {package} replaced by {', '.join(files)}", file=sys.stderr)
    for err in library.errors:
        print(f"warning: {err}", file=sys.stderr)
    aqua = args.aqua_server.rstrip("/") + "/#/images/" if args.aqua_server else ""
    template = PackageTemplate("render", args.package, library)
    contents = []
    for path in args.input:
        try:
            event = orjson.loads(_read_event(path))
        except orjson.JSONDecodeError as exc:
            raise HeraldError(f"{path}: the event is not JSON: {exc}") from None
        if not isinstance(event, dict):
            raise HeraldError(f"{path}: the event must be a JSON object")
        contents.append(template.render(orjson.dumps({**event, "postee": {"AquaServer": aqua}}).decode()))
    # several inputs: rendered one by one, then combined by the package's aggregation_pkg
    content = contents[0] if len(contents) == 1 else template.aggregate(contents)
    out = content.to_dict()
    out.pop("owners")
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


# test-route --origin: the Kafka headers of the event simulated (see app/routing/router.py, the guard)
def cmd_test_route(args: argparse.Namespace) -> int:
    from app.routing.router import TRY_ORIGINS, EventMeta, Router, route_report

    config = load_config(config_path(args.config))
    router = Router(config)
    raw = _read_event(args.event)
    meta = EventMeta.from_headers(TRY_ORIGINS[args.origin], "test-route", 0.0)
    meta.route = args.route
    result = router.route(raw, meta)
    report = route_report(config, meta, result)
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from app.forensics.dlq import DeadLetters
    from app.forensics.eventtime import parse_when

    dl = DeadLetters(_load(args))
    if args.op == "list":
        out: Any = dl.summary(args.target)
        if args.verbose:
            out = {"summary": out, "records": [
                {"id": r.id, "event_id": r.record.get("event_id"), "error": r.record.get("error"),
                 "attempts": r.record.get("attempts"), "status": r.record.get("status")}
                for stage in dl.stages(args.target) for r in dl.read(stage)]}
    elif args.op == "show":
        if not args.target:
            raise HeraldError("dlq show needs a dead-letter id (ACTION:PARTITION:OFFSET)")
        out = dl.show(args.target)
    elif args.op == "redrive":
        if not args.target:
            raise HeraldError("dlq redrive needs an action name")
        since = parse_when(args.since, "--since") / 1e9 if args.since else None
        out = dl.redrive(args.target, args.filter or "", since)
    else:
        if not args.yes:
            raise HeraldError("dlq purge deletes dead letters for good; add --yes to confirm")
        out = dl.purge(args.target)
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    from app.console.auth import exposure_problem
    from app.console.server import run

    config = _load(args, kafka=False)
    if args.listen:
        config.herald.console.listen = args.listen
    problem = exposure_problem(config.herald.console)  # before Kafka: a refusal needs no broker
    if problem:
        raise ConfigError(problem)
    _probe(config)
    return run(config)


def cmd_timeline(args: argparse.Namespace) -> int:
    from app.forensics.timeline import run_cli

    return run_cli(args, _load(args))


def cmd_replay(args: argparse.Namespace) -> int:
    from app.forensics.replay import run_cli

    return run_cli(args, _load(args, kafka=not args.from_file or bool(args.to_actions)), load_config)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="herald", description="Security alert router (Postee-compatible) on Kafka.")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", "-c", help="cfg.yaml path (default: $POSTEE_CFG or /config/cfg.yaml)")
        sp.add_argument("--bootstrap", help="Kafka bootstrap servers (overrides config and KAFKA_BOOTSTRAP_SERVERS)")

    for name, fn, text in (
        ("run", cmd_run, "bridge and worker together"),
        ("bridge", cmd_bridge, "the webhook bridge"),
        ("worker", cmd_worker, "the router and action agents"),
    ):
        sp = sub.add_parser(name, help=text)
        with_config(sp)
        sp.add_argument("--log-format", choices=FORMATS,
                        help="text (default) or json: one JSON object per line (default: $HERALD_LOG_FORMAT)")
        sp.set_defaults(fn=fn)

    sp = sub.add_parser("check-config", help="validate a config file")
    sp.add_argument("file")
    sp.add_argument("--connect", action="store_true",
                    help="also connect to Kafka with the configured settings (credentials, TLS, reachability)")
    sp.set_defaults(fn=cmd_check_config)

    sp = sub.add_parser("kafka-local", help="a local single-node Kafka on 127.0.0.1")
    sp.add_argument("op", choices=["start", "stop", "status"])
    sp.add_argument("--state-dir", default=os.environ.get("HERALD_KAFKA_DIR", ".herald/kafka"))
    sp.add_argument("--port", type=int, default=int(os.environ.get("HERALD_KAFKA_PORT", "9092")))
    sp.add_argument("--secured", action="store_true",
                    help="clients connect with SASL_SSL (SCRAM-SHA-512, a generated CA); inter-broker traffic "
                         "stays PLAINTEXT on port+2")
    sp.set_defaults(fn=cmd_kafka_local)

    sp = sub.add_parser("render", help="render a template package for an event, without Kafka")
    sp.add_argument("--template-dir", action="append", default=[], help="user template directory (repeatable)")
    sp.add_argument("--package", required=True, help="rego package, e.g. postee.vuls.html")
    sp.add_argument("--input", required=True, action="append",
                    help="event JSON file ('-' for stdin); repeated, the renders are combined by the "
                         "package's aggregation_pkg")
    sp.add_argument("--aqua-server", default="", help="Aqua console URL used for links")
    sp.add_argument("--engine", choices=["embedded", "opa"], default="embedded",
                    help="Rego engine: embedded (regorus) or an OPA server (--opa-url)")
    sp.add_argument("--opa-url", default="", help="OPA server for --engine opa, e.g. http://127.0.0.1:8181")
    sp.set_defaults(fn=cmd_render)

    sp = sub.add_parser("dlq", help="dead letters: list, show, redrive, purge")
    sp.add_argument("op", choices=["list", "show", "redrive", "purge"])
    sp.add_argument("target", nargs="?", help="action name (list/redrive/purge) or dead-letter id (show)")
    sp.add_argument("--filter", help="Rego rule body over the dead-letter record, e.g. 'input.status == 503'")
    sp.add_argument("--since", help="only dead letters whose last attempt is newer (2h, RFC 3339)")
    sp.add_argument("--verbose", "-v", action="store_true", help="list: every record, not only counts")
    sp.add_argument("--yes", action="store_true", help="purge: confirm")
    with_config(sp)
    sp.set_defaults(fn=cmd_dlq)

    sp = sub.add_parser("test-route", help="dry-run an event through a config's routes")
    sp.add_argument("--config", "-c")
    sp.add_argument("--route", help="run only this route (as /tenant/{route})")
    sp.add_argument("--origin", choices=["unauthenticated", "bearer", "hmac", "mtls", "kafka"],  # router.TRY_ORIGINS
                    default="unauthenticated",
                    help="where the event comes from, for the guard on system-changing actions: posted to the "
                         "bridge without credentials (default), with bearer/hmac/mtls credentials, or produced "
                         "to Kafka directly")
    sp.add_argument("event", help="event JSON file ('-' for stdin)")
    sp.set_defaults(fn=cmd_test_route)

    sp = sub.add_parser("console", help="the web console (app/console): live events, stories, dead letters, try a route")
    with_config(sp)
    sp.add_argument("--listen", help="host:port (default herald.console.listen, 127.0.0.1:8084)")
    sp.set_defaults(fn=cmd_console)

    # forensics (issue 7): app/forensics/timeline.py and app/forensics/replay.py own their options
    from app.forensics import replay, timeline

    sp = sub.add_parser("timeline", help="a window of events per entity, in event-time order")
    with_config(sp)
    timeline.add_arguments(sp)
    sp.set_defaults(fn=cmd_timeline)
    sp = sub.add_parser("replay", help="re-run recorded events through a config (dry run by default)")
    with_config(sp)
    replay.add_arguments(sp)
    sp.set_defaults(fn=cmd_replay)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.log_format = log_format(getattr(args, "log_format", None))
    except HeraldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.fn not in (cmd_bridge, cmd_worker) or args.log_format == "json":
        setup_logging(False, args.log_format)
    try:
        return int(args.fn(args) or 0)
    except ConfigError as exc:
        _say(args, f"config error: {exc}", logging.ERROR)
        return 2
    except HeraldError as exc:
        _say(args, f"error: {exc}", logging.ERROR)
        return 1


if __name__ == "__main__":
    sys.exit(main())
