# Camunda 7.24 Run with the Taskpool hook plugin in its userlib.
# Build from the repository root: docker build -f deploy/docker/camunda.Dockerfile .
# The plugin is registered by environment in docker-compose.yml
# (CAMUNDA_BPM_RUN_PROCESSENGINEPLUGINS_0_PLUGINCLASS) and reads TASKPOOL_HOOK_URL,
# TASKPOOL_HOOK_SECRET and TASKPOOL_HOOK_TIMEOUT_MS from the environment.

FROM maven:3.9-eclipse-temurin-17 AS plugin
WORKDIR /src
COPY camunda-collector/engine-plugin/ .
RUN mvn -B -q package -DskipTests && cp target/camunda-engine-plugin-*.jar /plugin.jar

FROM camunda/camunda-bpm-platform:run-7.24.0
COPY --from=plugin /plugin.jar /camunda/configuration/userlib/taskpool-hook-plugin.jar
