#!/bin/bash
# The image's HEALTHCHECK: exit 0 when rtgate answers GET /healthz with 200.
# No HTTP client in the slim image: bash's /dev/tcp. The port is the one of
# RTGATE_LISTEN (default 8080), or $1.
set -u
listen=${RTGATE_LISTEN:-0.0.0.0:8080}
port=${1:-${listen##*:}}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
IFS= read -r -t 2 status <&3 || exit 1
exec 3<&-
case "$status" in
"HTTP/1."?" 200 "*) exit 0 ;;
*) exit 1 ;;
esac
