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
from dataclasses import dataclass

import httpx
import structlog

from services.results.alerts import (
    AlertService,
    AlertsHandler,
    DeliveryDeps,
    DynamoAlertStore,
    DynamoRoster,
    RetryPolicy,
    SqsAlertQueue,
)
from services.results.api import ResultsAccess, create_app
from services.results.console import (
    ConsoleSessions,
    DynamoSessionStore,
    OidcSignIn,
    S3MediaLinks,
    SessionPolicy,
    create_console_router,
    derive_key,
)
from services.results.dosing import DosingReviews
from services.results.ehr import EhrPublisher
from services.results.erasure import (
    ERASURE_QUEUE,
    DynamoErasures,
    ErasureDeps,
    ErasureHandler,
    ErasureRequested,
    SqsQueuedMessages,
    encode_erasure,
)
from services.results.settings import ResultsSettings
from services.results.stage import RESULTS, ResultsDeps, ResultsWriter, sweep_stuck_jobs
from shared.aws.clients import AsyncClients, async_client, sync_client
from shared.aws.history import PatientHistory
from shared.aws.jobs import JobStore
from shared.aws.storage import Storage
from shared.domain.clinics import ClinicDirectory
from shared.domain.errors import ConfigurationError
from shared.identity.access import Access, build_access
from shared.runtime.http import serve_http
from shared.runtime.infra import ALERTS_QUEUE
from shared.runtime.messaging import MessageHandler, QueueConsumer
from shared.runtime.topology import STAGES
from shared.runtime.worker import StageContext, run_stage
from shared.settings import CommonSettings

log = structlog.get_logger()
SERVICE = "schizodot-results"


@dataclass(frozen=True)
class ResultsApp:
    """The adapters of the results process, built once at start-up (`compose`) and shared by the stage,
    the API and console, erasure, alert delivery and the sweepers."""

    settings: ResultsSettings
    common: CommonSettings
    aws: AsyncClients
    jobs: JobStore
    storage: Storage
    access: Access
    history: PatientHistory
    writer: ResultsWriter
    erasures: DynamoErasures
    clinics: ClinicDirectory
    alerts: AlertService
    ehr: EhrPublisher
    reviews: DosingReviews


def compose(context: StageContext[ResultsSettings]) -> ResultsApp:
    """The one place the results process's adapters are built; a bad clinics file
    (SCHIZODOT_CLINICS_FILE) stops the worker here, naming the problem."""
    settings, common, aws = context.settings, context.common, context.aws
    access = build_access(common, aws, service=SERVICE, auth=settings.auth)
    history = PatientHistory(aws.dynamodb, common.users_table)
    writer = ResultsWriter(aws.dynamodb, common.users_table)
    clinics = ClinicDirectory.from_file(common.clinics_file, plain_http_webhooks=common.embedded_stack) \
        if common.clinics_file else ClinicDirectory()
    alerts = AlertService(DynamoAlertStore(aws.dynamodb, common.alerts_table),
                          DynamoRoster(aws.dynamodb, common.clinic_patients_table),
                          clinics, SqsAlertQueue(aws.sqs, common.queue_name(ALERTS_QUEUE)))
    ehr = EhrPublisher(aws.sqs, sync_client(common, "sns") if settings.ehr_topic_arn else None,
                       settings.ehr_queue_url, settings.ehr_topic_arn)
    if not ehr.enabled:
        log.info("EHR delivery off: set RESULTS_EHR_QUEUE_URL or RESULTS_EHR_TOPIC_ARN to send FHIR results")
    # Dosing reviews (the API and the console) are written here, the one writer of SchizodotUsers.
    reviews = DosingReviews(context.jobs, history, writer, access.audit, storage=context.storage, alerts=alerts,
                            ehr=ehr, patient_identifier_system=settings.fhir_patient_identifier_system,
                            alert_history=settings.alert_history)
    return ResultsApp(settings=settings, common=common, aws=aws, jobs=context.jobs, storage=context.storage,
                      access=access, history=history, writer=writer,
                      erasures=DynamoErasures(aws.dynamodb, common.erasures_table), clinics=clinics, alerts=alerts,
                      ehr=ehr, reviews=reviews)


def build_deps(app: ResultsApp) -> ResultsDeps:
    return ResultsDeps(app.settings, app.storage, app.writer, app.ehr, app.access.audit, alerts=app.alerts,
                       history=app.history)


async def _every(seconds: float, stop: asyncio.Event, what: str, work: Callable[[], Awaitable[object]]) -> None:
    while not stop.is_set():
        try:
            await work()
        except Exception:
            log.exception(f"{what} failed; will try again")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)


async def run_sweeper(app: ResultsApp, stop: asyncio.Event) -> None:
    await _every(app.settings.sweep_interval_seconds, stop, "sweep", lambda: sweep_stuck_jobs(app.jobs, app.settings))


async def run_alert_sweep(app: ResultsApp, stop: asyncio.Event) -> None:
    """"No check-in for N days", on a schedule; every replica may run it (alerts are stored once by id)."""
    await _every(app.settings.alert_sweep_interval_seconds, stop, "alert sweep", app.alerts.sweep)


async def _queue_pair(app: ResultsApp, name: str) -> tuple[str, str]:
    sqs, common = app.aws.sqs, app.common
    queue = (await sqs.get_queue_url(QueueName=common.queue_name(name)))["QueueUrl"]
    dead_letters = (await sqs.get_queue_url(QueueName=common.dead_letter_queue_name(name)))["QueueUrl"]
    return queue, dead_letters


def _console(app: ResultsApp):
    settings, common, access = app.settings, app.common, app.access
    cookie = access.authenticator.settings.session_cookie
    if cookie and not settings.console_csrf_key:
        raise ConfigurationError("the console's sign-in cookie needs a CSRF key of its own: set RESULTS_CONSOLE_CSRF_KEY "
                                 "to a secret (e.g. `openssl rand -hex 32`), the same for every results replica",
                                 "RESULTS_CONSOLE_CSRF_KEY")
    # Presigning is local computation: a client aimed at the public endpoint signs URLs browsers reach.
    signer = sync_client(common.model_copy(update={"aws_endpoint_url": settings.public_s3_endpoint_url})
                         if settings.public_s3_endpoint_url else common, "s3")
    csrf_key = derive_key(settings.console_csrf_key, "console-csrf") if settings.console_csrf_key else secrets.token_bytes(32)
    store = DynamoSessionStore(app.aws.dynamodb, common.console_sessions_table)
    sessions = ConsoleSessions(access.authenticator, csrf_key, cookie,  # no cookie: no form token is ever checked
                               store=store, audit=access.audit,
                               policy=SessionPolicy(settings.console_idle_timeout_seconds,
                                                    settings.console_session_lifetime_seconds))
    return create_console_router(
        principal=access.principal, jobs=app.jobs, history=app.history,
        roster=app.alerts.roster, alerts=app.alerts.alerts, media=S3MediaLinks(signer, common.bucket),
        audit=access.audit, clinics=app.clinics, sessions=sessions, oidc=OidcSignIn(store),
        public_url=settings.console_url, media_url_seconds=settings.media_url_seconds,
        history_limit=settings.console_history_limit, reviews=app.reviews)


async def serve_api(app: ResultsApp, stop: asyncio.Event) -> None:
    settings, access = app.settings, app.access
    queue, _ = await _queue_pair(app, ERASURE_QUEUE)

    async def enqueue_erasure(body: str) -> str:
        return (await app.aws.sqs.send_message(QueueUrl=queue, MessageBody=body))["MessageId"]

    api = create_app(settings, app.jobs, app.history,
                     ResultsAccess(access.authenticator, access.audit, access.api_keys, app.erasures, enqueue_erasure),
                     console=_console(app) if settings.console_enabled else None, reviews=app.reviews)
    await serve_http(api, settings.api_host, settings.api_port, stop, port_setting="RESULTS_API_PORT",
                     required=False)  # saving results matters more than serving reads


async def _consume(app: ResultsApp, name: str, handler: MessageHandler, stop: asyncio.Event) -> None:
    """A work queue (shared.runtime.topology.WORK_QUEUES), run by the same consumer as every stage."""
    queue, dead_letters = await _queue_pair(app, name)
    consumer = QueueConsumer(sqs=app.aws.sqs, jobs=app.jobs, stage=name, queue_url=queue,
                             dead_letter_url=dead_letters, handler=handler, settings=app.common)
    await consumer.run(stop)


async def _queues_holding_patients(app: ResultsApp) -> tuple[str, ...]:
    """The queues an erasure reads through (services/results/erasure/queued.py): the ingest queue (S3's upload
    notifications name the patient key, EHR events the patient) and every stage's dead letters."""
    sqs, common = app.aws.sqs, app.common
    names = (common.queue_name("ingest"), *(common.dead_letter_queue_name(stage) for stage in STAGES))
    return tuple([(await sqs.get_queue_url(QueueName=name))["QueueUrl"] for name in names])


async def run_erasures(app: ResultsApp, stop: asyncio.Event) -> None:
    """Erasures are jobs of their own on the erasure queue."""
    sqs = app.aws.sqs
    queue, _ = await _queue_pair(app, ERASURE_QUEUE)
    delay = app.settings.erasure_sweep_delay_seconds

    async def schedule_sweep(request: ErasureRequested) -> None:
        await sqs.send_message(QueueUrl=queue, MessageBody=encode_erasure(request), DelaySeconds=delay)

    deps = ErasureDeps(jobs=app.jobs, storage=app.storage, results=app.writer, history=app.history,
                       links=app.access.links, erasures=app.erasures, audit=app.access.audit,
                       schedule_sweep=schedule_sweep, alerts=app.alerts.alerts, roster=app.alerts.roster,
                       queues=SqsQueuedMessages(sqs, await _queues_holding_patients(app)))
    await _consume(app, ERASURE_QUEUE, ErasureHandler(deps), stop)


async def run_alert_delivery(app: ResultsApp, stop: asyncio.Event) -> None:
    """Alerts go out from the alerts queue: once per channel, retried with back-off, then dead-lettered."""
    settings, clinics = app.settings, app.clinics
    uses_sns = any(clinics.get(c).delivery.sns_topic_arn for c in clinics.configured()) \
        or bool(clinics.default.delivery.sns_topic_arn)
    async with contextlib.AsyncExitStack() as resources:
        http = await resources.enter_async_context(httpx.AsyncClient())
        sns = await resources.enter_async_context(async_client(app.common, "sns")) if uses_sns else None
        deps = DeliveryDeps(app.alerts.alerts, clinics, http, sns=sns, console_url=settings.console_url,
                            retry=RetryPolicy(settings.alert_retry_base_seconds, settings.alert_retry_max_seconds),
                            audit=app.access.audit)
        await _consume(app, ALERTS_QUEUE, AlertsHandler(deps), stop)


def main() -> None:
    run_stage(RESULTS, ResultsSettings(), build_deps, compose=compose,
              side_tasks=(run_sweeper, serve_api, run_erasures, run_alert_delivery, run_alert_sweep))


if __name__ == "__main__":
    main()
