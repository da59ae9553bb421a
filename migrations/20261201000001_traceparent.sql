-- The W3C traceparent of the event that caused a job: the worker continues that trace, so one
-- trace shows request -> event -> job -> LLM call -> send. Null when tracing is off.
alter table email_jobs add column traceparent text;
alter table email_sends add column traceparent text;
