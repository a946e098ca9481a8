"""parkwatch collector: MQTT telemetry -> validate -> InfluxDB, with dead letters and metrics."""
