package dev.taskpool.plugin;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.function.Consumer;
import org.camunda.bpm.engine.impl.cfg.TransactionState;
import org.camunda.bpm.engine.impl.context.Context;
import org.camunda.bpm.engine.impl.interceptor.CommandContext;
import org.camunda.bpm.engine.impl.interceptor.Session;
import org.camunda.bpm.engine.impl.interceptor.SessionFactory;
import org.camunda.bpm.engine.impl.persistence.entity.TaskEntity;
import org.camunda.bpm.engine.impl.persistence.entity.VariableInstanceEntity;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Collects the tasks touched in one command context (= one transaction for REST calls, jobs and
 * Tasklist actions) and turns them into one hook record per task.
 *
 * <p>It is a command-context {@link Session}: the engine opens one per command context on first
 * use, and calls {@link #flush()} after the command's logic and every command-context-close
 * listener (TaskEntity writes its history "update" there). Sessions flush newest first, and this
 * one is always opened after the entity manager's, so it flushes before anything is written to the
 * database: the in-memory entities hold their final state and queries still work, so live tasks are
 * rendered there. A session is used rather than a CommandContextListener because the
 * engine iterates those listeners in a way that fails if one is registered while they run, which
 * would happen when the first task event of a command comes from TaskEntity's own close listener.
 *
 * <p>Tasks that end (complete/delete) are rendered when they end instead: right after, the engine
 * removes their candidate links and variables, and the process instance may be gone as well.
 *
 * <p>A variable change marks the task (task-local variable) or the process instance (variable of
 * an execution). At flush, each marked instance's open tasks are found with one query, and those
 * whose scope chain holds the changed execution get a record, so a transaction that touched no
 * task still reports what it changed.
 */
final class TransactionFold implements Session {

  private static final Logger LOG = LoggerFactory.getLogger(TransactionFold.class);

  static final class Factory implements SessionFactory {
    private final Consumer<List<HookSender.TaskRecord>> sender;
    private final int maxVariableChars;

    /** {@code sender}: takes the records of each committed transaction (HookSender#enqueue). */
    Factory(Consumer<List<HookSender.TaskRecord>> sender, int maxVariableChars) {
      this.sender = sender;
      this.maxVariableChars = maxVariableChars;
    }

    @Override
    public Class<?> getSessionType() {
      return TransactionFold.class;
    }

    @Override
    public Session openSession() {
      return new TransactionFold(sender, maxVariableChars);
    }
  }

  /** What happened to one task in this transaction. */
  private static final class Entry {
    TaskEntity task;
    boolean created;
    boolean assigned;
    boolean completed;
    boolean deleted;
    /** The delete reason from the history event that ended the task. */
    String endReason;
    /** The assignee before the first assignee identity-link event of this transaction. */
    boolean assigneeLinkSeen;
    String assigneeBefore;
    /** Rendered when the task ended (see class comment). */
    String endSnapshot;
    /** The finished record, set at flush. */
    String record;
  }

  private final Consumer<List<HookSender.TaskRecord>> sender;
  private final int maxVariableChars;
  private final Map<String, Entry> entries = new LinkedHashMap<>();
  /** Process instance id → the executions whose own variables changed (null: not known). */
  private final Map<String, Set<String>> changedScopes = new LinkedHashMap<>();
  /**
   * Process instance id → suspended (true) or activated (false) in this transaction. The engine
   * changes its tasks with a bulk statement at flush, after this session: the entities still show
   * the state before, so the records take it from here.
   */
  private final Map<String, Boolean> suspensions = new LinkedHashMap<>();
  private boolean listening;
  private boolean flushed;

  private TransactionFold(Consumer<List<HookSender.TaskRecord>> sender, int maxVariableChars) {
    this.sender = sender;
    this.maxVariableChars = maxVariableChars;
  }

  /** The fold of the current command context, or null outside of one. */
  static TransactionFold current() {
    CommandContext commandContext = Context.getCommandContext();
    return commandContext == null ? null : commandContext.getSession(TransactionFold.class);
  }

  /** A built-in task listener fired (BPMN user tasks only). */
  void onTaskListener(TaskEntity task, String event) {
    Entry entry = entry(task.getId(), task);
    switch (event) {
      case "create": entry.created = true; break;
      case "assignment": entry.assigned = true; break;
      case "complete": entry.completed = true; snapshotEnd(entry); break;
      case "delete": entry.deleted = true; snapshotEnd(entry); break;
      default: break; // update: the default
    }
    afterEvent(entry);
  }

  /**
   * A task history event (every task, also standalone ones): create, update, complete, migrate.
   * The engine reports every end of a task as "complete", deletions included; only the delete
   * reason ("completed" or not) tells them apart.
   */
  void onTaskHistory(String taskId, String eventType, String deleteReason) {
    Entry entry = entry(taskId, null);
    switch (eventType) {
      case "create":
        entry.created = true;
        break;
      case "complete":
      case "delete":
        entry.endReason = deleteReason;
        if ("completed".equals(deleteReason)) {
          entry.completed = true;
        } else {
          entry.deleted = true;
        }
        snapshotEnd(entry);
        break;
      default:
        break;
    }
    afterEvent(entry);
  }

  /**
   * An identity-link history event. Candidate changes need no flag (they are "update"). Assignee
   * links are how a standalone task's assignee change shows up (it has no task listeners), but the
   * engine also logs them (delete old + add new) when an update merely re-sets the same assignee,
   * so remember the assignee from before and compare it with the final one.
   */
  void onIdentityLinkHistory(String taskId, String linkType, String operationType, String userId) {
    Entry entry = entry(taskId, null);
    if ("assignee".equals(linkType) && !entry.assigneeLinkSeen) {
      entry.assigneeLinkSeen = true;
      entry.assigneeBefore = "delete".equals(operationType) ? userId : null;
    }
    afterEvent(entry);
  }

  /**
   * A variable history event (create, update, delete, migrate; history level audit or higher). A
   * task-local variable touches its task; any other one the process instance, resolved at flush.
   * Variables of neither (case instances, batches) are left to polling.
   */
  void onVariableHistory(String taskId, String processInstanceId, String executionId) {
    if (taskId != null) {
      afterEvent(entry(taskId, null));
    } else if (processInstanceId != null) {
      listen();
      changedScopes.computeIfAbsent(processInstanceId, k -> new HashSet<>()).add(executionId);
    }
  }

  /**
   * A process instance was suspended or activated (history event "update" with the new state; also
   * for each instance when its whole definition is): every open task of it changes.
   */
  void onInstanceSuspension(String processInstanceId, boolean suspended) {
    listen();
    suspensions.put(processInstanceId, suspended);
  }

  /** One commit listener per transaction, registered with the first thing it touches. */
  private void listen() {
    if (!listening) {
      listening = true;
      Context.getCommandContext().getTransactionContext()
          .addTransactionListener(TransactionState.COMMITTED, commandContext -> afterCommit());
    }
  }

  private Entry entry(String taskId, TaskEntity task) {
    Entry entry = entries.get(taskId);
    if (entry == null) {
      entry = new Entry();
      listen();
      entries.put(taskId, entry);
    }
    if (task == null && entry.task == null) {
      // History events carry only the id; the entity is in the cache because it was just changed.
      task = Context.getCommandContext().getDbEntityManager().getCachedEntity(TaskEntity.class, taskId);
    }
    if (task != null) {
      entry.task = task;
    }
    return entry;
  }

  private void snapshotEnd(Entry entry) {
    if (entry.endSnapshot == null && entry.task != null) {
      entry.endSnapshot = render(entry.task, null);
    }
  }

  /** The engine does not fire task events while sessions flush, but if it ever did, keep the record final. */
  private void afterEvent(Entry entry) {
    if (flushed) {
      entry.record = record(entry, null);
    }
  }

  @Override
  public void flush() {
    if (flushed) {
      // The engine flushes each session once, but a session it opens for our queries (a manager) is
      // put in front of its list while it iterates, which hands this one to it a second time.
      return;
    }
    CommandContext commandContext = Context.getCommandContext();
    Map<String, VariableScopes.Instance> instances = new HashMap<>();
    for (Map.Entry<String, Set<String>> changed : changedScopes.entrySet()) {
      try {
        addTasksThatSee(instance(instances, commandContext, changed.getKey()), changed.getValue());
      } catch (RuntimeException e) {
        LOG.warn("Taskpool hook: cannot find the tasks of process instance {} whose variables changed; "
            + "polling will find them: {}", changed.getKey(), e.toString());
      }
    }
    for (String instanceId : suspensions.keySet()) {
      try {
        VariableScopes.Instance instance = instance(instances, commandContext, instanceId);
        if (instance.live()) {
          for (TaskEntity task : instance.openTasks()) {
            entry(task.getId(), task);
          }
        }
      } catch (RuntimeException e) {
        LOG.warn("Taskpool hook: cannot find the tasks of process instance {} that was suspended or activated; "
            + "polling will find them: {}", instanceId, e.toString());
      }
    }
    // Several live tasks of one instance are rendered from one load of the instance; a single one
    // by walking its scopes, which reads less of a large instance.
    Map<String, Integer> rendered = new HashMap<>();
    for (Entry entry : entries.values()) {
      if (entry.task != null && entry.task.getProcessInstanceId() != null && !entry.task.isDeleted()) {
        rendered.merge(entry.task.getProcessInstanceId(), 1, Integer::sum);
      }
    }
    for (Map.Entry<String, Entry> entry : entries.entrySet()) {
      Entry value = entry.getValue();
      if (value.task == null) {
        value.task = load(commandContext, entry.getKey());
      }
      String instanceId = value.task == null ? null : value.task.getProcessInstanceId();
      VariableScopes.Instance instance = instanceId != null && rendered.getOrDefault(instanceId, 0) > 1
          ? instance(instances, commandContext, instanceId) : null;
      value.record = record(value, instance);
    }
    flushed = true;
  }

  private static VariableScopes.Instance instance(Map<String, VariableScopes.Instance> instances,
      CommandContext commandContext, String id) {
    return instances.computeIfAbsent(id, k -> new VariableScopes.Instance(commandContext, k));
  }

  /** Marks the instance's open tasks whose scope chain passes through one of the changed executions. */
  private void addTasksThatSee(VariableScopes.Instance instance, Set<String> executions) {
    if (!instance.live()) {
      return; // ended in this transaction: its tasks ended too and have their records
    }
    for (TaskEntity task : instance.openTasks()) {
      Entry existing = entries.get(task.getId());
      if (existing != null && existing.task != null && existing.task.isDeleted()) {
        continue;
      }
      for (String execution : executions) {
        if (instance.sees(task, execution)) {
          entry(task.getId(), task);
          break;
        }
      }
    }
  }

  /** A task only known by id (an event without the entity in the cache); null if it is gone. */
  private static TaskEntity load(CommandContext commandContext, String taskId) {
    try {
      return commandContext.getDbEntityManager().selectById(TaskEntity.class, taskId);
    } catch (RuntimeException e) {
      LOG.warn("Taskpool hook: cannot load task {}; it is left out of the hook: {}", taskId, e.toString());
      return null;
    }
  }

  @Override
  public void close() {
    // nothing to release; an uncommitted transaction never reaches afterCommit
  }

  private String record(Entry entry, VariableScopes.Instance instance) {
    TaskEntity task = entry.task;
    if (task == null) {
      return null; // gone: nothing we could report reliably
    }
    boolean ended = task.isDeleted(); // set by the engine on every way a task ends
    // A complete listener may have fired for a task that then did not end (e.g. the listener threw a
    // BPMN error that was caught elsewhere): only trust the end flags for tasks that really ended.
    boolean completed = ended && entry.completed;
    boolean deleted = ended && entry.deleted;
    if (ended && !completed && !deleted) { // ended without an event we saw
      completed = "completed".equals(task.getDeleteReason()) || "completed".equals(entry.endReason);
      deleted = !completed;
    }
    String body = ended && entry.endSnapshot != null ? entry.endSnapshot : render(task, ended ? null : instance);
    if (body == null) {
      return null;
    }
    // The assignment listener only fires on a real change; the identity-link log needs the comparison.
    boolean assigned = entry.assigned
        || entry.assigneeLinkSeen && !Objects.equals(entry.assigneeBefore, task.getAssignee());
    String event = deleted ? "delete" : completed ? "complete" : entry.created ? "create" : assigned ? "assignment" : "update";
    String deleteReason = completed ? "completed" : deleted ? deleteReason(task, entry.endReason) : null;
    return "{\"event\":" + JsonWriter.quote(event) + "," + body
        + ",\"deleteReason\":" + (deleteReason == null ? "null" : JsonWriter.quote(deleteReason)) + "}";
  }

  /** The engine's reason; "deleted" if it gave none, so a delete record always says why. */
  private static String deleteReason(TaskEntity task, String historyReason) {
    String reason = task.getDeleteReason() != null ? task.getDeleteReason() : historyReason;
    return reason == null ? "deleted" : reason;
  }

  /**
   * Never lets a problem of ours fail the engine's transaction. {@code instance}: the loaded process
   * instance to take the variables from (flush time only), or null to walk the task's scopes.
   */
  private String render(TaskEntity task, VariableScopes.Instance instance) {
    try {
      CommandContext commandContext = Context.getCommandContext();
      Map<String, VariableInstanceEntity> variables = instance != null
          ? instance.visible(task) : VariableScopes.walk(commandContext.getDbEntityManager(), task);
      Boolean suspended = task.getProcessInstanceId() == null ? null : suspensions.get(task.getProcessInstanceId());
      return TaskSnapshot.render(commandContext, task, variables,
          suspended != null ? suspended : task.isSuspended(), maxVariableChars);
    } catch (RuntimeException e) {
      LOG.warn("Taskpool hook: cannot snapshot task {}; it is left out of the hook: {}", task.getId(), e.toString());
      return null;
    }
  }

  private void afterCommit() {
    List<HookSender.TaskRecord> records = new ArrayList<>(entries.size());
    for (Map.Entry<String, Entry> entry : entries.entrySet()) {
      if (entry.getValue().record != null) {
        records.add(new HookSender.TaskRecord(entry.getKey(), entry.getValue().record));
      }
    }
    if (!records.isEmpty()) {
      sender.accept(records);
    }
  }
}
