-- floodway schema, version 11: the trace context a job carries from its enqueue to each of its
-- runs (W3C traceparent as JSON, written only when OpenTelemetry records the enqueue).
ALTER TABLE jobs ADD COLUMN trace TEXT;
