#!/bin/sh
# Runs beside the two auxiliary etcd members of the genesis node. Once AUXILIARY_THRESHOLD
# members that are not auxiliary have started, it hands leadership away from the auxiliary
# members, removes them from the cluster, deletes their data and their static pod manifest.
# etcdctl reads the endpoint and TLS files from the ETCDCTL_* environment.
set -eu

THRESHOLD=${AUXILIARY_THRESHOLD:-3}
INTERVAL=${MONITOR_INTERVAL:-30}
MANIFEST=${AUXILIARY_MANIFEST:-/etc/kubernetes/manifests/auxiliary-kubernetes-etcd.yaml}
DATA=${ETCD_DATA_ROOT:-/var/lib/etcd}

# `etcdctl member list` lines: ID, STATUS, NAME, PEER ADDRS, CLIENT ADDRS, IS LEARNER
started_members() {
    etcdctl member list 2>/dev/null |
        awk -F', ' '$2 == "started" && $3 !~ /^auxiliary-/ && $6 != "true" { print $1 }'
}

while [ "$(started_members | wc -l)" -lt "$THRESHOLD" ]; do
    sleep "$INTERVAL"
done

for name in auxiliary-0 auxiliary-1; do
    members=$(etcdctl member list)
    member=$(printf '%s\n' "$members" | awk -F', ' -v name="$name" '$3 == name { print $1 }')
    [ -n "$member" ] || continue
    # `endpoint status` lines: ENDPOINT, ID, VERSION, DB SIZE, IS LEADER, ...
    status=$(etcdctl endpoint status --cluster 2>/dev/null) || true
    leader=$(printf '%s\n' "$status" | awk -F', ' '$5 == "true" { print $1 " " $2 }')
    if [ "${leader#* }" = "$member" ]; then
        etcdctl --endpoints="${leader%% *}" move-leader "$(started_members | head -n 1)"
    fi
    etcdctl member remove "$member"
done
rm -rf "$DATA/auxiliary-0" "$DATA/auxiliary-1"
rm -f "$MANIFEST"
