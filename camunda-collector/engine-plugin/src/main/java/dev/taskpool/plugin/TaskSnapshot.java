package dev.taskpool.plugin;

import java.time.ZoneId;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Date;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.camunda.bpm.engine.form.CamundaFormRef;
import org.camunda.bpm.engine.impl.db.entitymanager.DbEntityManager;
import org.camunda.bpm.engine.impl.interceptor.CommandContext;
import org.camunda.bpm.engine.impl.persistence.entity.ExecutionEntity;
import org.camunda.bpm.engine.impl.persistence.entity.IdentityLinkEntity;
import org.camunda.bpm.engine.impl.persistence.entity.ProcessDefinitionEntity;
import org.camunda.bpm.engine.impl.persistence.entity.TaskEntity;
import org.camunda.bpm.engine.impl.persistence.entity.VariableInstanceEntity;
import org.camunda.bpm.engine.impl.variable.serializer.AbstractSerializableValueSerializer;
import org.camunda.bpm.engine.impl.variable.serializer.TypedValueSerializer;
import org.camunda.bpm.engine.task.IdentityLinkType;
import org.camunda.bpm.engine.variable.value.ObjectValue;
import org.camunda.bpm.engine.variable.value.SerializableValue;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Renders what the engine knows about one task, inside the command context, as the part of a hook
 * record after {@code "event"}: task, candidateUsers, candidateGroups, processDefinitionKey,
 * processName, businessKey, variables. The caller adds event and deleteReason, which depend on
 * everything that happened to the task in the transaction.
 */
final class TaskSnapshot {

  private static final Logger LOG = LoggerFactory.getLogger(TaskSnapshot.class);

  /** Camunda REST's date format; like the REST API, in the JVM's default time zone. */
  private static final DateTimeFormatter DATE_FORMAT =
      DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSSZ").withZone(ZoneId.systemDefault());

  /**
   * Variable types sent, by Camunda's type name; everything else (bytes, file, …) is left out, and
   * objects only in {@link #JSON_FORMAT}.
   */
  private static final Set<String> SENT_TYPES =
      Set.of("null", "string", "boolean", "short", "integer", "long", "double", "date", "json", "xml", "object");

  private static final String JSON_FORMAT = "application/json";

  private TaskSnapshot() {}

  static String formatDate(Date date) {
    return date == null ? null : DATE_FORMAT.format(date.toInstant());
  }

  /**
   * {@code variables}: those the task sees, by name (see {@link VariableScopes}); {@code suspended}:
   * whether it is suspended, as the transaction leaves it.
   */
  static String render(CommandContext commandContext, TaskEntity task, Map<String, VariableInstanceEntity> variables,
      boolean suspended, int maxVariableChars) {
    JsonWriter json = new JsonWriter();
    json.beginObject(); // only to get the commas right; stripped below
    writeTask(json.name("task"), task, suspended);

    List<String> users = new ArrayList<>();
    List<String> groups = new ArrayList<>();
    candidates(commandContext, task, users, groups);
    writeStrings(json.name("candidateUsers"), users);
    writeStrings(json.name("candidateGroups"), groups);

    ProcessDefinitionEntity definition = task.getProcessDefinitionId() == null ? null : task.getProcessDefinition();
    ExecutionEntity processInstance = task.getProcessInstanceId() == null ? null : task.getProcessInstance();
    json.name("processDefinitionKey").value(definition == null ? null : definition.getKey());
    json.name("processName").value(definition == null ? null : definition.getName());
    json.name("businessKey").value(processInstance == null ? null : processInstance.getBusinessKey());

    writeVariables(json.name("variables"), variables, maxVariableChars);
    json.endObject();

    String object = json.toString();
    return object.substring(1, object.length() - 1);
  }

  /** The fields of Camunda REST's TaskDto that the contract names, with the same names. */
  private static void writeTask(JsonWriter json, TaskEntity task, boolean suspended) {
    json.beginObject()
        .name("id").value(task.getId())
        .name("name").value(task.getName())
        .name("description").value(task.getDescription())
        .name("assignee").value(task.getAssignee())
        .name("owner").value(task.getOwner())
        .name("created").value(formatDate(task.getCreateTime()))
        .name("due").value(formatDate(task.getDueDate()))
        .name("followUp").value(formatDate(task.getFollowUpDate()))
        .name("lastUpdated").value(formatDate(task.getLastUpdated()))
        .name("priority").value(task.getPriority())
        .name("processDefinitionId").value(task.getProcessDefinitionId())
        .name("processInstanceId").value(task.getProcessInstanceId())
        .name("executionId").value(task.getExecutionId())
        .name("taskDefinitionKey").value(task.getTaskDefinitionKey())
        .name("formKey").value(formKey(task));
    writeFormRef(json, task);
    json.name("tenantId").value(task.getTenantId())
        .name("caseInstanceId").value(task.getCaseInstanceId())
        .name("parentTaskId").value(task.getParentTaskId())
        .name("suspended").value(suspended)
        .endObject();
  }

  /** The Camunda Form of the task (camunda:formRef), as REST's camundaFormRef; absent when it has none. */
  private static void writeFormRef(JsonWriter json, TaskEntity task) {
    CamundaFormRef ref;
    try {
      task.initializeFormKey();
      ref = task.getCamundaFormRef();
    } catch (RuntimeException e) {
      LOG.debug("Taskpool hook: cannot evaluate the form reference of task {}: {}", task.getId(), e.toString());
      return;
    }
    if (ref == null || ref.getKey() == null) {
      return;
    }
    json.name("camundaFormRef").beginObject()
        .name("key").value(ref.getKey())
        .name("binding").value(ref.getBinding());
    if (ref.getVersion() != null) {
      json.name("version").value(ref.getVersion().longValue());
    }
    json.endObject();
  }

  /** The form key may be an expression; REST evaluates it per read, so do the same, but never fail over it. */
  private static String formKey(TaskEntity task) {
    try {
      task.initializeFormKey();
      return task.getFormKey();
    } catch (RuntimeException e) {
      LOG.debug("Taskpool hook: cannot evaluate the form key of task {}: {}", task.getId(), e.toString());
      return null;
    }
  }

  /**
   * Candidate links as they will be after this transaction commits. TaskEntity's own cached link
   * list is not updated when a single link is deleted, so read the entity cache instead: first load
   * the persisted links into it (a brand-new task has none), then take the task's links that are
   * not marked deleted, including ones inserted in this transaction and not yet flushed.
   */
  private static void candidates(CommandContext commandContext, TaskEntity task, List<String> users, List<String> groups) {
    DbEntityManager db = commandContext.getDbEntityManager();
    if (!db.getDbEntityCache().isTransient(task)) {
      commandContext.getIdentityLinkManager().findIdentityLinksByTaskId(task.getId());
    }
    for (IdentityLinkEntity link : db.getCachedEntitiesByType(IdentityLinkEntity.class)) {
      if (task.getId().equals(link.getTaskId()) && IdentityLinkType.CANDIDATE.equals(link.getType()) && !db.isDeleted(link)) {
        if (link.getUserId() != null) {
          users.add(link.getUserId());
        }
        if (link.getGroupId() != null) {
          groups.add(link.getGroupId());
        }
      }
    }
    Collections.sort(users);
    Collections.sort(groups);
  }

  private static void writeStrings(JsonWriter json, List<String> values) {
    json.beginArray();
    String previous = null;
    for (String value : values) { // sorted, so duplicates are adjacent
      if (!value.equals(previous)) {
        json.value(value);
      }
      previous = value;
    }
    json.endArray();
  }

  /**
   * Variables in the shape of REST's VariableValueDto with deserializeValues=false, for the types
   * in {@link #SENT_TYPES} only. The type is known without reading the value, so large binary
   * values are never loaded. One bad variable is left out, never the whole record.
   */
  private static void writeVariables(JsonWriter json, Map<String, VariableInstanceEntity> variables, int maxChars) {
    json.beginObject();
    for (Map.Entry<String, VariableInstanceEntity> variable : variables.entrySet()) {
      try { // the type name alone may fail: a serializer the engine no longer has (e.g. Spin removed)
        String entry = SENT_TYPES.contains(variable.getValue().getTypeName()) ? variableValue(variable.getValue(), maxChars) : null;
        if (entry != null) {
          json.name(variable.getKey()).raw(entry);
        }
      } catch (RuntimeException e) {
        LOG.debug("Taskpool hook: leaving out variable {}: {}", variable.getKey(), e.toString());
      }
    }
    json.endObject();
  }

  /** One variable as {"type","value"[,"valueInfo"]}, or null if it is not sent. */
  static String variableValue(VariableInstanceEntity variable, int maxChars) {
    String typeName = variable.getTypeName();
    String restType = Character.toUpperCase(typeName.charAt(0)) + typeName.substring(1);
    JsonWriter entry = new JsonWriter().beginObject().name("type").value(restType).name("value");
    TypedValueSerializer<?> serializer = variable.getSerializer();
    if (serializer instanceof AbstractSerializableValueSerializer) {
      // Json, Xml, Object. Read the serialized text from the value fields, never through the cached
      // value: it may hold a deserialized object (set from Java, or read by a delegate), whose text
      // is only in the fields, and calling getValue() on a serialized one would deserialize it in
      // the engine's cache. The fields hold the final text: the engine re-serializes changed objects
      // before the sessions flush.
      String format = ((AbstractSerializableValueSerializer<?>) serializer).getSerializationDataformat();
      if ("object".equals(typeName) && !JSON_FORMAT.equals(format)) {
        return null; // Java-serialized and other formats mean nothing outside the engine
      }
      SerializableValue value = (SerializableValue) serializer.readValue(variable, false, false);
      String text = value.getValueSerialized();
      if (text != null && maxChars > 0 && text.length() > maxChars) {
        return null;
      }
      entry.value(text);
      if (value instanceof ObjectValue) {
        entry.name("valueInfo").beginObject()
            .name("objectTypeName").value(((ObjectValue) value).getObjectTypeName())
            .name("serializationDataFormat").value(JSON_FORMAT)
            .endObject();
      }
      return entry.endObject().toString();
    }
    Object value = variable.getTypedValue(false).getValue();
    if (value == null) {
      entry.nullValue();
    } else if (value instanceof String) {
      if (maxChars > 0 && ((String) value).length() > maxChars) {
        return null;
      }
      entry.value((String) value);
    } else if (value instanceof Boolean) {
      entry.value((Boolean) value);
    } else if (value instanceof Double) {
      if (!Double.isFinite((Double) value)) {
        return null; // NaN and infinities have no JSON form
      }
      entry.value((Double) value);
    } else if (value instanceof Number) {
      entry.value(((Number) value).longValue());
    } else if (value instanceof Date) {
      entry.value(formatDate((Date) value));
    } else {
      return null;
    }
    return entry.endObject().toString();
  }
}
