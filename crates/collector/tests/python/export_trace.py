"""Exports one trace to a collector with the official OpenTelemetry Python SDK.

Usage: python3 export_trace.py OTLP_BASE_URL
Prints the trace id (32 hex digits) once the SDK has exported it.
"""

import sys

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

base = sys.argv[1].rstrip("/")
provider = TracerProvider(
    resource=Resource.create({"service.name": "python-sdk", "deployment.environment": "test"})
)
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces")))
tracer = provider.get_tracer("zerostate-interop", "1.0")

with tracer.start_as_current_span("checkout", attributes={"peer.id": "py-peer"}) as parent:
    with tracer.start_as_current_span("charge card") as child:
        child.set_attribute("amount", 42)
        child.set_status(Status(StatusCode.ERROR, "card declined"))
    trace_id = format(parent.get_span_context().trace_id, "032x")

if not provider.force_flush(10_000):
    sys.exit("the SDK did not flush within 10 s")
provider.shutdown()
print(trace_id)
