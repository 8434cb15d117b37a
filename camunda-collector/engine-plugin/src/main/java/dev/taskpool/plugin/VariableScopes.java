package dev.taskpool.plugin;

import java.util.HashSet;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import org.camunda.bpm.engine.impl.core.variable.CoreVariableInstance;
import org.camunda.bpm.engine.impl.core.variable.scope.AbstractVariableScope;
import org.camunda.bpm.engine.impl.db.entitymanager.DbEntityManager;
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
   * variable query per scope not loaded yet.
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
}
