"""deploy/cloudformation/headrace.yaml: linted, and what matters in it asserted.

cfn-lint (dev extra) must report nothing, checkov (``.venv-checkov``) no failed check and
only skips with a written reason. The other tests read the template (short-form tags
loaded as their long form) and compare it with the code it deploys: the worker's settings
defaults, the Dockerfile's user, the benchmark the sizes come from.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from support.deploy import (
    ROOT,
    TEMPLATE,
    assert_checkov_passes,
    assert_silent,
    dev_tool,
    dockerfile_stages,
    load_template,
)

from headrace.settings import Settings, WorkerSettings

BENCH = ROOT / "bench" / "results" / "bench-1000000.json"
METRIC_ID = re.compile(r"[a-z][a-zA-Z0-9_]*")
#: Fargate's CPU units -> the memory (MiB) each allows.
FARGATE_MEMORY = {
    "256": range(512, 2049, 512),
    "512": range(1024, 4097, 1024),
    "1024": range(2048, 8193, 1024),
    "2048": range(4096, 16385, 1024),
    "4096": range(8192, 30721, 1024),
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if not name.startswith("Fn::ForEach::")
    }


def _props(resources: dict[str, Any], name: str) -> dict[str, Any]:
    properties: dict[str, Any] = resources[name]["Properties"]
    return properties


def _container(resources: dict[str, Any], task: str) -> dict[str, Any]:
    (container,) = _props(resources, task)["ContainerDefinitions"]
    assert isinstance(container, dict)
    return container


def _environment(container: dict[str, Any]) -> dict[str, Any]:
    return {
        entry["Name"]: entry["Value"]
        for entry in container.get("Environment", [])
        if isinstance(entry, dict) and "Name" in entry
    }


def _secrets(container: dict[str, Any]) -> dict[str, Any]:
    """Secret name -> valueFrom, the conditional ones (``!If``) included."""
    found = {}
    for entry in container.get("Secrets", []):
        if "Fn::If" in entry:
            entry = entry["Fn::If"][1]
        found[entry["Name"]] = entry["ValueFrom"]
    return found


TASKS = ("WorkerTaskDefinition", "ProducerTaskDefinition", "MigrateTaskDefinition")


# --- the linters ------------------------------------------------------------------------------


def test_cfn_lint_reports_nothing() -> None:
    assert_silent(dev_tool("cfn-lint"), "--format", "parseable", TEMPLATE)


def test_checkov_fails_nothing() -> None:
    assert_checkov_passes(TEMPLATE, "cloudformation")


def test_every_checkov_skip_says_why(resources: dict[str, Any]) -> None:
    skips = [
        (name, skip)
        for name, resource in resources.items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips, "expected the documented skips (SSE-SQS, log group keys)"
    for name, skip in skips:
        assert len(skip.get("comment", "")) >= 40, f"{name}: skip {skip['id']} without a reason"


# --- SQS ----------------------------------------------------------------------------------


def test_queues_are_encrypted(resources: dict[str, Any]) -> None:
    for name in ("Queue", "DeadLetterQueue"):
        properties = _props(resources, name)
        assert properties.get("SqsManagedSseEnabled") is True or properties.get("KmsMasterKeyId")


def test_main_queue_redrives_into_the_dlq_which_only_it_may_use(resources: dict[str, Any]) -> None:
    queue, dlq = _props(resources, "Queue"), _props(resources, "DeadLetterQueue")
    redrive = queue["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert 2 <= redrive["maxReceiveCount"] <= 10
    allow = dlq["RedriveAllowPolicy"]
    assert allow["redrivePermission"] == "byQueue"
    (source,) = allow["sourceQueueArnList"]
    main_name = queue["QueueName"]["Fn::Sub"]
    assert source["Fn::Sub"].endswith(":" + main_name), (source, main_name)


def test_visibility_and_retention_match_the_worker(resources: dict[str, Any]) -> None:
    queue, dlq = _props(resources, "Queue"), _props(resources, "DeadLetterQueue")
    worker = WorkerSettings()
    env = _environment(_container(resources, "WorkerTaskDefinition"))
    assert queue["VisibilityTimeout"] == worker.visibility_timeout_s
    assert int(env["HEADRACE_WORKER__VISIBILITY_TIMEOUT_S"]) == queue["VisibilityTimeout"]
    assert worker.heartbeat_interval_s < queue["VisibilityTimeout"]
    assert queue["ReceiveMessageWaitTimeSeconds"] == worker.wait_time_s
    # Longer than the 12-hour visibility cap and a parked message's wait; the DLQ longer still
    # (a standard queue's retention counts from the first send).
    assert queue["MessageRetentionPeriod"] > max(43_200, worker.max_park_s)
    assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]


def test_only_the_producer_role_may_send(resources: dict[str, Any]) -> None:
    statements = _props(resources, "QueuePolicy")["PolicyDocument"]["Statement"]
    producer = {"Fn::GetAtt": ["ProducerTaskRole", "Arn"]}
    allows = [s for s in statements if s["Effect"] == "Allow"]
    assert allows == [
        {
            "Sid": "ProducerSendsOnly",
            "Effect": "Allow",
            "Principal": {"AWS": producer},
            "Action": "sqs:SendMessage",
            "Resource": {"Fn::GetAtt": ["Queue", "Arn"]},
        }
    ]
    deny = next(s for s in statements if s["Sid"] == "NobodyElseSends")
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == "*"
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": producer}}


# --- task definitions ---------------------------------------------------------------------


def test_worker_stop_timeout_outlasts_its_drain_deadline(resources: dict[str, Any]) -> None:
    container = _container(resources, "WorkerTaskDefinition")
    deadline = WorkerSettings().shutdown_deadline_s
    configured = float(_environment(container)["HEADRACE_WORKER__SHUTDOWN_DEADLINE_S"])
    assert configured <= deadline, "the task definition raises the deadline: check stopTimeout"
    assert deadline + 10 <= container["StopTimeout"] <= 120


@pytest.mark.parametrize("task", TASKS)
def test_containers_run_read_only_as_the_image_user_with_an_init(
    resources: dict[str, Any], task: str
) -> None:
    container = _container(resources, task)
    properties = _props(resources, task)
    assert container["ReadonlyRootFilesystem"] is True
    assert container["LinuxParameters"]["InitProcessEnabled"] is True
    assert container["StopTimeout"] <= 120
    image_user = dockerfile_stages()[-1].all("USER")[-1]
    assert container["User"] == image_user
    assert container["User"].split(":")[0] not in {"0", "root"}
    (volume,) = properties["Volumes"]
    assert container["MountPoints"] == [
        {"SourceVolume": volume["Name"], "ContainerPath": "/tmp", "ReadOnly": False}
    ]
    assert properties["RequiresCompatibilities"] == ["FARGATE"]


@pytest.mark.parametrize("task", ["WorkerTaskDefinition", "ProducerTaskDefinition"])
def test_health_check_and_metrics_port(resources: dict[str, Any], task: str) -> None:
    container = _container(resources, task)
    assert container["HealthCheck"]["Command"] == ["CMD", "headrace", "health"]
    assert {"ContainerPort": 9400, "Protocol": "tcp", "Name": "metrics"} in container[
        "PortMappings"
    ]
    assert _environment(container)["HEADRACE_METRICS__PORT"] == "9400"


@pytest.mark.parametrize("task", TASKS)
def test_credentials_come_from_secrets_manager(resources: dict[str, Any], task: str) -> None:
    container = _container(resources, task)
    env, secrets = _environment(container), _secrets(container)
    assert not {name for name in env if "PASSWORD" in name or "KEY" in name}
    assert secrets["HEADRACE_DB__PASSWORD"]["Fn::Sub"].endswith(":password::")
    assert secrets["HEADRACE_DB__USER"]["Fn::Sub"].endswith(":username::")
    assert env["HEADRACE_DB__TLS_MODE"] == "verify-identity"
    assert env["HEADRACE_DB__TLS_CA"] == "/etc/headrace/rds-ca.pem"


def _setting_exists(variable: str) -> bool:
    model: type[BaseModel] = Settings
    parts = variable.removeprefix("HEADRACE_").lower().split("__")
    for part in parts[:-1]:
        annotation = model.model_fields[part].annotation
        assert isinstance(annotation, type)
        assert issubclass(annotation, BaseModel)
        model = annotation
    return parts[-1] in model.model_fields


@pytest.mark.parametrize("task", TASKS)
def test_every_headrace_variable_is_a_setting(resources: dict[str, Any], task: str) -> None:
    container = _container(resources, task)
    names = [*_environment(container), *_secrets(container)]
    unknown = [n for n in names if n.startswith("HEADRACE_") and not _setting_exists(n)]
    assert not unknown, f"{task}: no such settings {unknown}"


def test_sizes_follow_the_benchmark(template: dict[str, Any]) -> None:
    """Memory at least twice the measured peak RSS; a Fargate-valid CPU/memory pair."""
    bench = json.loads(BENCH.read_text())
    parameters = template["Parameters"]
    for role in ("worker", "producer"):
        cpu = parameters[f"{role.title()}Cpu"]["Default"]
        memory = int(parameters[f"{role.title()}Memory"]["Default"])
        assert memory in FARGATE_MEMORY[cpu], (role, cpu, memory)
        assert memory >= 2 * bench["resources"][f"{role}_rss_mb"], role
    one_worker = bench["e2e"]["1"]
    busy_vcpu = one_worker["rows_per_s"] * bench["resources"]["e2e_1"]["worker_cpu_s_per_1m"] / 1e6
    assert int(parameters["WorkerCpu"]["Default"]) / 1024 >= 1.5 * busy_vcpu


# --- scaling --------------------------------------------------------------------------------


def test_backlog_target_is_derived_from_the_benchmark(template: dict[str, Any]) -> None:
    """Target = one worker's rows/s x the lag users accept (60 s) / rows per message."""
    bench = json.loads(BENCH.read_text())["e2e"]["1"]
    report = bench["producer_report"]
    rows_per_message = report["rows_sent"] / report["messages_sent"]
    expected = math.floor(bench["rows_per_s"] * 60 / rows_per_message)
    assert template["Parameters"]["BacklogPerTaskTarget"]["Default"] == expected


def _check_metric_math(queries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Ids valid and unique, one returned series, expressions naming only defined ids."""
    by_id = {query["Id"]: query for query in queries}
    assert len(by_id) == len(queries), "duplicate metric ids"
    for query_id in by_id:
        assert METRIC_ID.fullmatch(query_id), f"invalid metric id {query_id!r}"
    assert [q["Id"] for q in queries if q.get("ReturnData")] == [queries[-1]["Id"]]
    for query in queries:
        if "Expression" in query:
            names = set(re.findall(r"\b[a-z][a-zA-Z0-9_]*\b", query["Expression"]))
            assert names <= set(by_id), f"{query['Expression']} names {names - set(by_id)}"
        else:
            assert query["MetricStat"]["Metric"]["MetricName"]
    return by_id


def _metric(query: dict[str, Any]) -> tuple[str, str]:
    metric = query["MetricStat"]["Metric"]
    return metric["Namespace"], metric["MetricName"]


def test_target_tracking_holds_backlog_per_running_task(resources: dict[str, Any]) -> None:
    policy = _props(resources, "BacklogPerTaskPolicy")
    assert policy["PolicyType"] == "TargetTrackingScaling"
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == {"Ref": "BacklogPerTaskTarget"}
    assert config["ScaleOutCooldown"] > 0
    assert config["ScaleInCooldown"] >= config["ScaleOutCooldown"]
    by_id = _check_metric_math(config["CustomizedMetricSpecification"]["Metrics"])
    assert by_id["backlogpertask"]["Expression"] == "visible / running"
    assert _metric(by_id["visible"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert _metric(by_id["running"]) == ("ECS/ContainerInsights", "RunningTaskCount")
    settings = _props(resources, "Cluster")["ClusterSettings"]
    assert {"Name": "containerInsights", "Value": "enabled"} in settings


@pytest.mark.parametrize(
    ("alarm", "returned"),
    [
        ("BacklogWithoutWorkerScaleAlarm", "IF(FILL(running, 0) == 0, visible, 0)"),
        ("NoWorkerWhileBacklogAlarm", "IF(FILL(running, 0) == 0, visible, 0)"),
        ("QueueEmptyScaleAlarm", "visible + inflight"),
    ],
)
def test_metric_math_alarms(resources: dict[str, Any], alarm: str, returned: str) -> None:
    by_id = _check_metric_math(_props(resources, alarm)["Metrics"])
    assert list(by_id.values())[-1]["Expression"] == returned


def test_step_policies_scale_from_and_to_zero(resources: dict[str, Any]) -> None:
    target = _props(resources, "WorkerScalableTarget")
    assert target["MinCapacity"] == {"Ref": "MinWorkers"}
    assert target["MaxCapacity"] == {"Ref": "MaxWorkers"}
    for policy, alarm, capacity in (
        ("ScaleFromZeroPolicy", "BacklogWithoutWorkerScaleAlarm", 1),
        ("ScaleToZeroPolicy", "QueueEmptyScaleAlarm", 0),
    ):
        config = _props(resources, policy)["StepScalingPolicyConfiguration"]
        assert config["AdjustmentType"] == "ExactCapacity"
        assert config["Cooldown"] > 0
        (step,) = config["StepAdjustments"]
        assert step["ScalingAdjustment"] == capacity
        assert _props(resources, alarm)["AlarmActions"] == [{"Ref": policy}]


def test_worker_service_rolls_back_a_failed_deployment(resources: dict[str, Any]) -> None:
    service = _props(resources, "WorkerService")
    breaker = service["DeploymentConfiguration"]["DeploymentCircuitBreaker"]
    assert breaker == {"Enable": True, "Rollback": True}
    assert service["ServiceRegistries"] == [
        {"RegistryArn": {"Fn::GetAtt": ["WorkerDiscoveryService", "Arn"]}}
    ]
    providers = {p["CapacityProvider"] for p in service["CapacityProviderStrategy"]}
    assert providers == set(_props(resources, "Cluster")["CapacityProviders"])
    assert "DesiredCount" not in service, "autoscaling owns the desired count"


# --- IAM --------------------------------------------------------------------------------------

EXPECTED_ACTIONS = {
    "ProducerTaskRole": {"sqs:SendMessage", "sqs:GetQueueAttributes", "s3:GetObject"},
    "WorkerTaskRole": {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "ecs:UpdateTaskProtection",
        "ecs:GetTaskProtection",
    },
    "MigrateTaskRole": set(),
    "ExecutionRole": {
        "ecr:GetAuthorizationToken",
        "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchGetImage",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "secretsmanager:GetSecretValue",
    },
    "EventsRole": {"ecs:RunTask", "iam:PassRole"},
}


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        statement
        for policy in role["Properties"].get("Policies", [])
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


@pytest.mark.parametrize("role", sorted(EXPECTED_ACTIONS))
def test_each_role_has_exactly_its_actions(resources: dict[str, Any], role: str) -> None:
    statements = _statements(resources[role])
    assert "ManagedPolicyArns" not in resources[role]["Properties"]
    assert all(statement["Effect"] == "Allow" for statement in statements)
    actions = {action for statement in statements for action in _actions(statement)}
    assert actions == EXPECTED_ACTIONS[role]
    for statement in statements:
        if statement["Resource"] == "*":
            assert _actions(statement) == ["ecr:GetAuthorizationToken"], statement


def test_roles_are_scoped_to_their_resources(resources: dict[str, Any]) -> None:
    def resource_of(role: str, action: str) -> Any:
        (found,) = [s["Resource"] for s in _statements(resources[role]) if action in _actions(s)]
        return found

    queue_arn = {"Fn::GetAtt": ["Queue", "Arn"]}
    assert resource_of("WorkerTaskRole", "sqs:ReceiveMessage") == queue_arn
    assert resource_of("ProducerTaskRole", "sqs:SendMessage") == queue_arn
    dlq_depth = [
        s["Resource"]
        for s in _statements(resources["WorkerTaskRole"])
        if "sqs:ReceiveMessage" not in _actions(s) and "sqs:GetQueueAttributes" in _actions(s)
    ]
    assert dlq_depth == [{"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}]
    dlq_actions = {
        action
        for s in _statements(resources["WorkerTaskRole"])
        if s["Resource"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
        for action in _actions(s)
    }
    # GetQueueUrl: SqsQueue.dead_letter resolves the DLQ's URL from the RedrivePolicy's ARN.
    assert dlq_actions == {"sqs:GetQueueAttributes", "sqs:GetQueueUrl"}
    s3 = resource_of("ProducerTaskRole", "s3:GetObject")["Fn::Sub"]
    assert s3.endswith(":s3:::${DropBucketName}/${DropPrefix}*")
    protection = resource_of("WorkerTaskRole", "ecs:UpdateTaskProtection")["Fn::Sub"]
    assert protection.endswith(":task/${AWS::StackName}/*"), "tasks of this cluster only"
    assert resource_of("EventsRole", "ecs:RunTask") == {"Ref": "ProducerTaskDefinition"}
    assert resource_of("EventsRole", "iam:PassRole") == [
        {"Fn::GetAtt": ["ProducerTaskRole", "Arn"]},
        {"Fn::GetAtt": ["ExecutionRole", "Arn"]},
    ]


# --- on-demand producers ------------------------------------------------------------------


def test_drop_rule_runs_the_producer_container_with_the_key_and_table(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    identifier, collection, body = template["Resources"]["Fn::ForEach::DropRules"]
    assert collection == {"Ref": "DropTables"}
    (rule,) = body.values()
    properties = rule["Properties"]
    pattern = properties["EventPattern"]
    assert pattern["source"] == ["aws.s3"]
    assert pattern["detail-type"] == ["Object Created"]
    prefix = pattern["detail"]["object"]["key"][0]["prefix"]["Fn::Sub"]
    assert prefix == "${DropPrefix}${" + identifier + "}/"
    (target,) = properties["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["Cluster", "Arn"]}
    assert target["EcsParameters"]["TaskDefinitionArn"] == {"Ref": "ProducerTaskDefinition"}
    transformer = target["InputTransformer"]
    assert transformer["InputPathsMap"] == {
        "bucket": "$.detail.bucket.name",
        "key": "$.detail.object.key",
    }
    overrides = json.loads(
        transformer["InputTemplate"]["Fn::Sub"].replace("${" + identifier + "}", "observations")
    )
    (override,) = overrides["containerOverrides"]
    assert override["name"] == _container(resources, "ProducerTaskDefinition")["Name"]
    assert override["command"] == [
        "produce",
        "s3://<bucket>/<key>",
        "--table",
        "observations",
    ]


def test_template_path_is_where_the_guide_says() -> None:
    guide = (ROOT / "deploy" / "README.md").read_text()
    assert str(TEMPLATE.relative_to(ROOT)) in guide
    assert Path(TEMPLATE).exists()
