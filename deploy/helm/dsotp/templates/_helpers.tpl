{{- define "dsotp.fullname" -}}
{{- printf "%s-dsotp" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dsotp.labels" -}}
app.kubernetes.io/part-of: dsotp
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "dsotp.selector" -}}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/name: {{ .name }}
{{- end -}}

{{- define "dsotp.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "dsotp.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "dsotp.fullname" .)) -}}
{{- end -}}

{{- define "dsotp.mqttHost" -}}
{{- if .Values.rabbitmq.enabled -}}{{ include "dsotp.fullname" . }}-rabbitmq{{- else -}}{{ required "externalMqtt.host is required when rabbitmq.enabled is false" .Values.externalMqtt.host }}{{- end -}}
{{- end -}}

{{- define "dsotp.mqttPort" -}}
{{- if .Values.rabbitmq.enabled -}}1883{{- else -}}{{ .Values.externalMqtt.port }}{{- end -}}
{{- end -}}

{{- define "dsotp.kafkaUrl" -}}
{{- if .Values.kafka.enabled -}}kafka://{{ include "dsotp.fullname" . }}-kafka-kafka-bootstrap:9092{{- else -}}{{ required "externalKafka.url is required when kafka.enabled is false" .Values.externalKafka.url }}{{- end -}}
{{- end -}}

{{- define "dsotp.influxUrl" -}}
{{- if .Values.influxdb.enabled -}}http://{{ include "dsotp.fullname" . }}-influxdb:8086{{- else -}}{{ required "externalInflux.url is required when influxdb.enabled is false" .Values.externalInflux.url }}{{- end -}}
{{- end -}}

{{/* Environment of every dsotp container: the ConfigMap, and the secrets by key. */}}
{{- define "dsotp.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "dsotp.fullname" . }}-config
env:
  - name: DSOTP_MQTT__USERNAME
    valueFrom: {secretKeyRef: {name: {{ include "dsotp.secretName" . }}, key: mqtt-username}}
  - name: DSOTP_MQTT__PASSWORD
    valueFrom: {secretKeyRef: {name: {{ include "dsotp.secretName" . }}, key: mqtt-password}}
  - name: DSOTP_INFLUX__USERNAME
    valueFrom: {secretKeyRef: {name: {{ include "dsotp.secretName" . }}, key: influx-username}}
  - name: DSOTP_INFLUX__PASSWORD
    valueFrom: {secretKeyRef: {name: {{ include "dsotp.secretName" . }}, key: influx-password}}
{{- end -}}

{{- define "dsotp.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "dsotp.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end -}}

{{/* Liveness of bridge and worker: the heartbeat file they touch every 2 s is fresh. */}}
{{- define "dsotp.heartbeatProbe" -}}
exec:
  command: ["python", "-c", "import os, sys, time; sys.exit(time.time() - os.stat('/tmp/dsotp/alive').st_mtime > 30)"]
{{- end -}}

{{- define "dsotp.volumes" -}}
- name: agents
  configMap:
    name: {{ include "dsotp.fullname" . }}-agents
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "dsotp.mounts" -}}
- name: agents
  mountPath: /etc/dsotp/agents
  readOnly: true
- name: tmp
  mountPath: /tmp/dsotp
{{- end -}}
