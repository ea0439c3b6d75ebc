"""The generator of goodput's Prometheus rules, PodMonitors and Grafana dashboard, from one source.

Code, not manifests: `python -m observability` writes into manifests/observability/ (never installed):

- `rules.yaml`: plain rule groups, for `promtool` and for a Prometheus configured with `rule_files`;
- `prometheus-rules.yaml`: the same groups as a `monitoring.coreos.com/v1` PrometheusRule;
- `goodput-dashboard.json`: the Grafana dashboard; its panels read the series the rules record;
- `monitors.yaml`: PodMonitors that scrape the workers, the operator and the routers with the labels the rules
  expect.

The SLO of each service reaches Prometheus through the operator's gauges `goodput_slo_ttft_target_seconds`
and `goodput_slo_tpot_target_seconds` (labels namespace, inferenceservice, percentile="95"|"99"). A p95
target of X is the objective "95% of events within X", so its error budget is 5%. Histograms only count
requests per bucket, so the share within a target that falls between two bucket bounds is interpolated
linearly inside that bucket: the same assumption `histogram_quantile` makes, which keeps the alerts and
the operator's observed p95 consistent (an observed p95 equal to the target is exactly a 5% error ratio).
Windows longer than 5 minutes average the recorded 5-minute rates instead of rereading days of raw buckets.
"""
