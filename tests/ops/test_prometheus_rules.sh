#!/usr/bin/env bash
# test_prometheus_rules: the shipped Prometheus rules and config, checked by
# Debian's promtool: `check rules`, `check config` (with a file_sd target
# file as `transfuse top --prometheus-sd` writes it), and `test rules` with
# the synthetic series of rules_test.yml (every alert fires where it must
# and stays quiet beside). A mutant with the NaN alert broken must fail the
# unit tests, so the tests can tell.
#   test_prometheus_rules.sh PROMTOOL OPS_PROMETHEUS_DIR RULES_TEST WORKDIR
set -euo pipefail
P=$1 SRC=$2 UT=$3 W=$4
fail() { echo "FAIL: $*" >&2; exit 1; }
rm -rf "$W" && mkdir -p "$W/targets"
cp "$SRC/transfuse.rules.yml" "$SRC/prometheus.yml" "$W/"
cp "$UT" "$W/rules_test.yml"
echo '[{"targets": ["127.0.0.1:9100"], "labels": {"command": "broker", "transfuse_host": "h", "transfuse_pid": "1"}}]' \
  >"$W/targets/transfuse.json"
"$P" check rules "$W/transfuse.rules.yml" || fail "promtool check rules"
"$P" check config "$W/prometheus.yml" || fail "promtool check config"
(cd "$W" && "$P" test rules rules_test.yml) || fail "promtool test rules"
# The mutant: a NaN check that never holds.
mkdir -p "$W/mutant"
sed 's/transfuse_train_loss_lm != transfuse_train_loss_lm/transfuse_train_loss_lm > 1e300/' \
  "$W/transfuse.rules.yml" >"$W/mutant/transfuse.rules.yml"
cmp -s "$W/transfuse.rules.yml" "$W/mutant/transfuse.rules.yml" && fail "the mutation did not apply"
cp "$W/rules_test.yml" "$W/mutant/"
if (cd "$W/mutant" && "$P" test rules rules_test.yml >"$W/mutant.out" 2>&1); then
  fail "the unit tests did not notice a broken NaN alert"
fi
grep -q TransfuseTrainerLossNaN "$W/mutant.out" || fail "the mutant failed for another reason: $(cat "$W/mutant.out")"
echo "test_prometheus_rules: all checks passed"
