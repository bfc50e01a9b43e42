"""Names of every span, attribute and instrument the telemetry records, in one place.

Standard names come from the OpenTelemetry semantic conventions (HTTP client spans and
metrics are stable; the GenAI ``gen_ai.*`` names are still "development"). Everything of our
own is prefixed ``grok_imagine.``.
"""

from __future__ import annotations

INSTRUMENTATION_NAME = "grok_imagine_async"
PROVIDER_NAME = "grok_imagine"
"""``gen_ai.provider.name`` of the job spans."""
OPERATION_NAME = "generate_video"
"""``gen_ai.operation.name`` (and the name) of the job spans, as xai-sdk names it."""

# -- standard attributes ------------------------------------------------------------------------
HTTP_METHOD = "http.request.method"
HTTP_STATUS = "http.response.status_code"
HTTP_RESEND_COUNT = "http.request.resend_count"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
URL_FULL = "url.full"
URL_TEMPLATE = "url.template"
ERROR_TYPE = "error.type"
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_PROVIDER = "gen_ai.provider.name"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
"""The task id (the id the provider gave the generation)."""

# -- our attributes -------------------------------------------------------------------------------
JOB_KEY = "grok_imagine.job.key"
JOB_OUTCOME = "grok_imagine.job.outcome"
JOB_FAILURE_CLASS = "grok_imagine.job.failure_class"
JOB_STATE = "grok_imagine.job.state"
BREAKER_TRANSITION = "grok_imagine.breaker.transition"
BREAKER_REASON = "grok_imagine.breaker.reason"
JOB_ATTEMPTS = "grok_imagine.job.attempts"
JOB_POLLS = "grok_imagine.job.polls"
JOB_CREDITS = "grok_imagine.job.credits"
JOB_FROM_JOURNAL = "grok_imagine.job.from_journal"
TASK_ID = "grok_imagine.task.id"
REQUEST_MODE = "grok_imagine.request.mode"
REQUEST_RATIO = "grok_imagine.request.ratio"
REQUEST_IMAGES = "grok_imagine.request.image_count"
REQUEST_PROMPT = "grok_imagine.request.prompt"
"""Only with ``Telemetry(record_prompts=True)``."""
RATE_LIMIT_REMAINING = "grok_imagine.rate_limit.remaining"
PERMIT_WAIT = "grok_imagine.rate_limit.permit_wait"
DOWNLOAD_FILES = "grok_imagine.download.files"

# -- job span events ------------------------------------------------------------------------------
EVENT_SUBMIT = "submit"
EVENT_RESUME = "resume"
EVENT_POLL = "poll"
EVENT_RESUBMIT = "resubmit"
EVENT_DOWNLOAD = "download"

# -- instruments ----------------------------------------------------------------------------------
HTTP_CLIENT_DURATION = "http.client.request.duration"
REQUESTS = "grok_imagine.client.requests"
RATE_LIMITED = "grok_imagine.client.rate_limited"
CREDITS = "grok_imagine.credits.consumed"
JOBS_FINISHED = "grok_imagine.jobs.finished"
BREAKER_EVENTS = "grok_imagine.scheduler.breaker.events"
"""Pauses, probes, resumes and stops of a batch on a systematic failure."""
GENERATION_DURATION = "grok_imagine.generation.duration"
DETECTION_LATENCY = "grok_imagine.generation.detection_latency"
JOBS = "grok_imagine.jobs"
SCHEDULER_CREDITS = "grok_imagine.scheduler.credits"
SCHEDULER_CREDIT_BUDGET = "grok_imagine.scheduler.credit_budget"
QUOTA_REMAINING = "grok_imagine.rate_limit.remaining"
QUOTA_RATE = "grok_imagine.rate_limit.request_rate"
QUOTA_LIMIT = "grok_imagine.rate_limit.limit"
QUOTA_USAGE = "grok_imagine.rate_limit.usage"

HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
"""The HTTP conventions' advice for ``http.client.request.duration``."""
GENERATION_BUCKETS = (5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200)
DETECTION_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
