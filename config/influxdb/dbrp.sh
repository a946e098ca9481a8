#!/bin/sh
# Runs once, when the influxdb:2 image sets itself up (docker-entrypoint-initdb.d): Grafana
# queries with InfluxQL, which addresses a database and retention policy; InfluxDB 2.x maps
# those onto a bucket with a DBRP mapping. (2.4+ also has a virtual mapping for every bucket;
# an explicit one states the mapping and works on every 2.x.)
set -eu
influx v1 dbrp create \
  --org "${DOCKER_INFLUXDB_INIT_ORG}" \
  --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
  --db "${DOCKER_INFLUXDB_INIT_BUCKET}" \
  --rp autogen \
  --default
