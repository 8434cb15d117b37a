package dev.taskpool.plugin;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import org.camunda.bpm.engine.impl.core.variable.CoreVariableInstance;
import org.camunda.bpm.engine.impl.core.variable.scope.AbstractVariableScope;
import org.camunda.bpm.engine.impl.db.entitymanager.DbEntityManager;
import org.camunda.bpm.engine.impl.interceptor.CommandContext;
import org.camunda.bpm.engine.impl.persistence.entity.ExecutionEntity;
import org.camunda.bpm.engine.impl.persistence.entity.TaskEntity;
import org.camunda.bpm.engine.impl.persistence.entity.VariableInstanceEntity;

/**
 * The variables a task sees, as {@code GET /task/{id}/variables} sees them: the task's own first,
 * then each scope above it (its execution, that execution's parents up to the process instance;
 * for CMMN tasks the case executions; for a subtask its parent task); the nearest scope wins on a
 * name clash. Transient and deleted variables are skipped before the clash check: they are gone
 * after the commit, so the farther variable is the one a later REST read sees.
 */
final class VariableScopes {

  private VariableScopes() {}

  /**
   * By walking the engine's own scope objects: exact at any point of a command, at the price of one
   * variable query per scope not loaded yet. Used for a single task.
   */
  static Map<String, VariableInstanceEntity> walk(DbEntityManager db, TaskEntity task) {
    Map<String, VariableInstanceEntity> visible = new TreeMap<>();
    Set<AbstractVariableScope> seen = new HashSet<>(); // a corrupt parent chain must not loop
    for (AbstractVariableScope scope = task; scope != null && seen.add(scope); scope = scope.getParentVariableScope()) {
      for (CoreVariableInstance variable : scope.getVariableInstancesLocal()) {
        if (variable instanceof VariableInstanceEntity) {
          VariableInstanceEntity entity = (VariableInstanceEntity) variable;
          if (!entity.isTransient() && !db.isDeleted(entity)) {
            visible.putIfAbsent(entity.getName(), entity);
          }
        }
      }
    }
    return visible;
  }

  /**
   * One process instance as it will be after the commit, for flush time only (when the command's
   * logic is done): its tasks, executions and variables from one query each, merged with the
   * entity cache, which holds this transaction's changes (new entities, changed fields, deletions).
   * Used when several tasks of one instance are rendered, so they cost three queries, not a few each.
   */
  static final class Instance {
    private final DbEntityManager db;
    private final CommandContext commandContext;
    private final String id;
    private List<TaskEntity> openTasks;
    private Map<String, ExecutionEntity> executions;
    private Map<String, List<VariableInstanceEntity>> byExecution;
    private Map<String, List<VariableInstanceEntity>> byTask;

    Instance(CommandContext commandContext, String id) {
      this.commandContext = commandContext;
      this.db = commandContext.getDbEntityManager();
      this.id = id;
    }

    /** False once the process instance was deleted or ended in this transaction: no task of it stays open. */
    boolean live() {
      ExecutionEntity processInstance = db.getCachedEntity(ExecutionEntity.class, id);
      return processInstance == null || !(db.isDeleted(processInstance) || processInstance.isEnded());
    }

    /** Started in this transaction: the database has nothing of it yet, the cache has it all. */
    private boolean isNew() {
      ExecutionEntity processInstance = db.getCachedEntity(ExecutionEntity.class, id);
      return processInstance != null && db.getDbEntityCache().isTransient(processInstance);
    }

    /** The tasks of the instance that are still open after this transaction (one query). */
    List<TaskEntity> openTasks() {
      if (openTasks == null) {
        Map<String, TaskEntity> tasks = new LinkedHashMap<>();
        List<TaskEntity> stored = isNew() ? List.of() : commandContext.getTaskManager().findTasksByProcessInstanceId(id);
        for (TaskEntity task : stored) {
          tasks.put(task.getId(), task); // the cached object where there is one (DbEntityManager#cacheFilter)
        }
        for (TaskEntity task : db.getCachedEntitiesByType(TaskEntity.class)) {
          if (id.equals(task.getProcessInstanceId())) {
            tasks.putIfAbsent(task.getId(), task); // created in this transaction, not in the database yet
          }
        }
        tasks.values().removeIf(task -> task.isDeleted() || db.isDeleted(task) || !id.equals(task.getProcessInstanceId()));
        openTasks = new ArrayList<>(tasks.values());
      }
      return openTasks;
    }

    /** True if the task's scope chain passes through the execution, or if that execution is unknown (then: assume so). */
    boolean sees(TaskEntity task, String executionId) {
      if (executionId == null || executionId.equals(id)) {
        return true; // the process instance is the top of every task's chain: no need to load the tree
      }
      loadScopes();
      if (!executions.containsKey(executionId)) {
        return true; // gone or never seen (e.g. a scope that ended in this transaction): rather one record too many
      }
      for (String scope : chain(task)) {
        if (scope.equals(executionId)) {
          return true;
        }
      }
      return false;
    }

    /** What {@link VariableScopes#walk} gives for a task of this instance, from the loaded state. */
    Map<String, VariableInstanceEntity> visible(TaskEntity task) {
      loadScopes();
      Map<String, VariableInstanceEntity> visible = new TreeMap<>();
      for (VariableInstanceEntity variable : byTask.getOrDefault(task.getId(), List.of())) {
        visible.putIfAbsent(variable.getName(), variable);
      }
      for (String scope : chain(task)) {
        for (VariableInstanceEntity variable : byExecution.getOrDefault(scope, List.of())) {
          visible.putIfAbsent(variable.getName(), variable);
        }
      }
      return visible;
    }

    /** The task's execution and its parents, nearest first. */
    private List<String> chain(TaskEntity task) {
      List<String> chain = new ArrayList<>();
      String scope = task.getExecutionId();
      while (scope != null && !chain.contains(scope)) {
        chain.add(scope);
        ExecutionEntity execution = executions.get(scope);
        scope = execution == null ? null : execution.getParentId();
      }
      return chain;
    }

    private void loadScopes() {
      if (executions != null) {
        return;
      }
      boolean isNew = isNew();
      executions = new HashMap<>();
      for (ExecutionEntity execution : isNew ? List.<ExecutionEntity>of()
          : commandContext.getExecutionManager().findExecutionsByProcessInstanceId(id)) {
        executions.put(execution.getId(), execution);
      }
      for (ExecutionEntity execution : db.getCachedEntitiesByType(ExecutionEntity.class)) {
        if (id.equals(execution.getProcessInstanceId())) {
          executions.putIfAbsent(execution.getId(), execution);
        }
      }
      executions.values().removeIf(execution -> db.isDeleted(execution) || !id.equals(execution.getProcessInstanceId()));

      Map<String, VariableInstanceEntity> variables = new LinkedHashMap<>();
      for (VariableInstanceEntity variable : isNew ? List.<VariableInstanceEntity>of()
          : commandContext.getVariableInstanceManager().findVariableInstancesByProcessInstanceId(id)) {
        variables.put(variable.getId(), variable);
      }
      for (VariableInstanceEntity variable : db.getCachedEntitiesByType(VariableInstanceEntity.class)) {
        if (id.equals(variable.getProcessInstanceId())) {
          variables.putIfAbsent(variable.getId(), variable);
        }
      }
      byExecution = new HashMap<>();
      byTask = new HashMap<>();
      for (VariableInstanceEntity variable : variables.values()) {
        if (variable.isTransient() || db.isDeleted(variable) || !id.equals(variable.getProcessInstanceId())) {
          continue;
        }
        if (variable.getTaskId() != null) {
          byTask.computeIfAbsent(variable.getTaskId(), k -> new ArrayList<>()).add(variable);
        } else if (variable.getExecutionId() != null) {
          byExecution.computeIfAbsent(variable.getExecutionId(), k -> new ArrayList<>()).add(variable);
        }
      }
    }
  }
}
