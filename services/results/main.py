"""Results worker: saves each job's SchizodotUsers item, sends it to the EHR, raises
the clinic's alerts, completes the job, serves the read API and the clinician
console, runs erasures from the erasure queue, delivers alerts from the alerts
queue, and sweeps jobs that stopped making progress and patients who stopped
checking in."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable

import httpx
import structlog

from shared.clinics import ClinicDirectory
from services.results.alerts.delivery import AlertsHandler, DeliveryDeps, RetryPolicy
from services.results.alerts.roster import DynamoRoster
from services.results.alerts.service import AlertService, SqsAlertQueue
from services.results.alerts.store import DynamoAlertStore
from services.results.api.app import ResultsAccess, create_app
from services.results.console.ports import S3MediaLinks
from services.results.console.router import create_console_router
from services.results.console.oidc import OidcSignIn
from services.results.console.sessions import ConsoleSessions, DynamoSessionStore, SessionPolicy, derive_key
from services.results.dosing import DosingReviews
from services.results.ehr.publisher import EhrPublisher
from services.results.erasure import (
    ERASURE_QUEUE,
    DynamoErasures,
    ErasureDeps,
    SqsQueuedMessages,
    ErasureHandler,
    ErasureRequested,
    encode_erasure,
)
from services.results.stage.handlers import RESULTS, ResultsDeps, sweep_stuck_jobs
from services.results.settings import ResultsSettings
from services.results.stage.writer import ResultsWriter
from shared.access import Access, build_access
from shared.aws import async_client, sync_client
from shared.errors import ConfigurationError
from shared.history import PatientHistory
from shared.http import serve_http
from shared.infra import ALERTS_QUEUE
from shared.messaging import MessageHandler, QueueConsumer
from shared.topology import STAGES
from shared.worker import StageContext, run_stage

log = structlog.get_logger()
SERVICE = "schizodot-results"


def _once(context: StageContext[ResultsSettings], name: str, build: Callable[[], object]):
    """An adapter built once per process and shared by the stage and the side tasks."""
    cached = getattr(context, name, None)
    if cached is None:
        cached = build()
        setattr(context, name, cached)
    return cached


def _access(context: StageContext[ResultsSettings]) -> Access:
    return _once(context, "_access", lambda: build_access(context.common, context.aws, service=SERVICE,
                                                                    auth=context.settings.auth))


def _history(context: StageContext[ResultsSettings]) -> PatientHistory:
    return _once(context, "_history", lambda: PatientHistory(context.aws.dynamodb, context.common.users_table))


def _writer(context: StageContext[ResultsSettings]) -> ResultsWriter:
    return _once(context, "_writer", lambda: ResultsWriter(context.aws.dynamodb, context.common.users_table))


def _erasures(context: StageContext[ResultsSettings]) -> DynamoErasures:
    return _once(context, "_erasures", lambda: DynamoErasures(context.aws.dynamodb, context.common.erasures_table))


def _clinics(context: StageContext[ResultsSettings]) -> ClinicDirectory:
    """The clinics file (SCHIZODOT_CLINICS_FILE); a bad one stops the worker at start-up, naming the problem."""
    path, embedded = context.common.clinics_file, context.common.embedded_stack
    return _once(context, "_clinic_directory", lambda: ClinicDirectory.from_file(
        path, plain_http_webhooks=embedded) if path else ClinicDirectory())


def _alert_service(context: StageContext[ResultsSettings]) -> AlertService:
    common, aws = context.common, context.aws
    return _once(context, "_alert_service", lambda: AlertService(
        DynamoAlertStore(aws.dynamodb, common.alerts_table), DynamoRoster(aws.dynamodb, common.clinic_patients_table),
        _clinics(context), SqsAlertQueue(aws.sqs, common.queue_name(ALERTS_QUEUE))))


def _ehr(context: StageContext[ResultsSettings]) -> EhrPublisher:
    settings, common = context.settings, context.common

    def build() -> EhrPublisher:
        ehr = EhrPublisher(context.aws.sqs, sync_client(common, "sns") if settings.ehr_topic_arn else None,
                           settings.ehr_queue_url, settings.ehr_topic_arn)
        if not ehr.enabled:
            log.info("EHR delivery off: set RESULTS_EHR_QUEUE_URL or RESULTS_EHR_TOPIC_ARN to send FHIR results")
        return ehr
    return _once(context, "_ehr_publisher", build)


def _reviews(context: StageContext[ResultsSettings]) -> DosingReviews:
    """Dosing reviews (the API and the console): written here, the one writer of SchizodotUsers."""
    settings = context.settings
    return _once(context, "_dosing_reviews", lambda: DosingReviews(
        context.jobs, _history(context), _writer(context), _access(context).audit, storage=context.storage,
        alerts=_alert_service(context), ehr=_ehr(context),
        patient_identifier_system=settings.fhir_patient_identifier_system, alert_history=settings.alert_history))


def build_deps(context: StageContext[ResultsSettings]) -> ResultsDeps:
    return ResultsDeps(context.settings, context.storage, _writer(context), _ehr(context), _access(context).audit,
                       alerts=_alert_service(context), history=_history(context))


async def _every(seconds: float, stop: asyncio.Event, what: str, work: Callable[[], Awaitable[object]]) -> None:
    while not stop.is_set():
        try:
            await work()
        except Exception:
            log.exception(f"{what} failed; will try again")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)


async def run_sweeper(context: StageContext[ResultsSettings], stop: asyncio.Event) -> None:
    await _every(context.settings.sweep_interval_seconds, stop, "sweep",
                 lambda: sweep_stuck_jobs(context.jobs, context.settings))


async def run_alert_sweep(context: StageContext[ResultsSettings], stop: asyncio.Event) -> None:
    """"No check-in for N days", on a schedule; every replica may run it (alerts are stored once by id)."""
    await _every(context.settings.alert_sweep_interval_seconds, stop, "alert sweep",
                 _alert_service(context).sweep)


async def _queue_pair(context: StageContext[ResultsSettings], name: str) -> tuple[str, str]:
    sqs, common = context.aws.sqs, context.common
    queue = (await sqs.get_queue_url(QueueName=common.queue_name(name)))["QueueUrl"]
    dead_letters = (await sqs.get_queue_url(QueueName=common.dead_letter_queue_name(name)))["QueueUrl"]
    return queue, dead_letters


def _console(context: StageContext[ResultsSettings], access: Access):
    settings, common = context.settings, context.common
    cookie = access.authenticator.settings.session_cookie
    if cookie and not settings.console_csrf_key:
        raise ConfigurationError("the console's sign-in cookie needs a CSRF key of its own: set RESULTS_CONSOLE_CSRF_KEY "
                                 "to a secret (e.g. `openssl rand -hex 32`), the same for every results replica",
                                 "RESULTS_CONSOLE_CSRF_KEY")
    # Presigning is local computation: a client aimed at the public endpoint signs URLs browsers reach.
    signer = sync_client(common.model_copy(update={"aws_endpoint_url": settings.public_s3_endpoint_url})
                         if settings.public_s3_endpoint_url else common, "s3")
    alerts = _alert_service(context)
    csrf_key = derive_key(settings.console_csrf_key, "console-csrf") if settings.console_csrf_key else secrets.token_bytes(32)
    store = DynamoSessionStore(context.aws.dynamodb, common.console_sessions_table)
    sessions = ConsoleSessions(access.authenticator, csrf_key, cookie,  # no cookie: no form token is ever checked
                               store=store, audit=access.audit,
                               policy=SessionPolicy(settings.console_idle_timeout_seconds,
                                                    settings.console_session_lifetime_seconds))
    return create_console_router(
        principal=access.principal, jobs=context.jobs, history=_history(context),
        roster=alerts.roster, alerts=alerts.alerts, media=S3MediaLinks(signer, common.bucket), audit=access.audit,
        clinics=_clinics(context), sessions=sessions, oidc=OidcSignIn(store), public_url=settings.console_url,
        media_url_seconds=settings.media_url_seconds,
        history_limit=settings.console_history_limit, reviews=_reviews(context))


async def serve_api(context: StageContext[ResultsSettings], stop: asyncio.Event) -> None:
    settings = context.settings
    access = _access(context)
    queue, _ = await _queue_pair(context, ERASURE_QUEUE)

    async def enqueue_erasure(body: str) -> str:
        return (await context.aws.sqs.send_message(QueueUrl=queue, MessageBody=body))["MessageId"]

    app = create_app(settings, context.jobs, _history(context),
                     ResultsAccess(access.authenticator, access.audit, access.api_keys,
                                   _erasures(context), enqueue_erasure),
                     console=_console(context, access) if settings.console_enabled else None,
                     reviews=_reviews(context))
    await serve_http(app, settings.api_host, settings.api_port, stop, port_setting="RESULTS_API_PORT",
                     required=False)  # saving results matters more than serving reads


async def _consume(context: StageContext[ResultsSettings], name: str, handler: MessageHandler,
                   stop: asyncio.Event) -> None:
    """A work queue (shared.topology.WORK_QUEUES), run by the same consumer as every stage."""
    queue, dead_letters = await _queue_pair(context, name)
    consumer = QueueConsumer(sqs=context.aws.sqs, jobs=context.jobs, stage=name, queue_url=queue,
                             dead_letter_url=dead_letters, handler=handler, settings=context.common)
    await consumer.run(stop)


async def _queues_holding_patients(context: StageContext[ResultsSettings]) -> tuple[str, ...]:
    """The queues an erasure reads through (services/results/erasure/handler.py): the ingest queue (S3's upload
    notifications name the patient key, EHR events the patient) and every stage's dead letters."""
    sqs, common = context.aws.sqs, context.common
    names = (common.queue_name("ingest"), *(common.dead_letter_queue_name(stage) for stage in STAGES))
    return tuple([(await sqs.get_queue_url(QueueName=name))["QueueUrl"] for name in names])


async def run_erasures(context: StageContext[ResultsSettings], stop: asyncio.Event) -> None:
    """Erasures are jobs of their own on the erasure queue."""
    aws = context.aws
    access = _access(context)
    queue, _ = await _queue_pair(context, ERASURE_QUEUE)
    delay = context.settings.erasure_sweep_delay_seconds
    alerts = _alert_service(context)

    async def schedule_sweep(request: ErasureRequested) -> None:
        await aws.sqs.send_message(QueueUrl=queue, MessageBody=encode_erasure(request), DelaySeconds=delay)

    deps = ErasureDeps(jobs=context.jobs, storage=context.storage,
                       results=_writer(context), history=_history(context), links=access.links,
                       erasures=_erasures(context), audit=access.audit,
                       schedule_sweep=schedule_sweep, alerts=alerts.alerts, roster=alerts.roster,
                       queues=SqsQueuedMessages(aws.sqs, await _queues_holding_patients(context)))
    await _consume(context, ERASURE_QUEUE, ErasureHandler(deps), stop)


async def run_alert_delivery(context: StageContext[ResultsSettings], stop: asyncio.Event) -> None:
    """Alerts go out from the alerts queue: once per channel, retried with back-off, then dead-lettered."""
    settings, clinics = context.settings, _clinics(context)
    uses_sns = any(clinics.get(c).delivery.sns_topic_arn for c in clinics.configured()) \
        or bool(clinics.default.delivery.sns_topic_arn)
    async with contextlib.AsyncExitStack() as resources:
        http = await resources.enter_async_context(httpx.AsyncClient())
        sns = await resources.enter_async_context(async_client(context.common, "sns")) if uses_sns else None
        deps = DeliveryDeps(_alert_service(context).alerts, clinics, http, sns=sns, console_url=settings.console_url,
                            retry=RetryPolicy(settings.alert_retry_base_seconds, settings.alert_retry_max_seconds),
                            audit=_access(context).audit)
        await _consume(context, ALERTS_QUEUE, AlertsHandler(deps), stop)


def main() -> None:
    run_stage(RESULTS, ResultsSettings(), build_deps,
              side_tasks=(run_sweeper, serve_api, run_erasures, run_alert_delivery, run_alert_sweep))


if __name__ == "__main__":
    main()
