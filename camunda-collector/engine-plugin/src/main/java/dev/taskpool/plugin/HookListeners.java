package dev.taskpool.plugin;

import java.util.List;
import org.camunda.bpm.engine.delegate.DelegateTask;
import org.camunda.bpm.engine.delegate.TaskListener;
import org.camunda.bpm.engine.impl.bpmn.behavior.UserTaskActivityBehavior;
import org.camunda.bpm.engine.impl.bpmn.parser.AbstractBpmnParseListener;
import org.camunda.bpm.engine.history.HistoricProcessInstance;
import org.camunda.bpm.engine.impl.history.event.HistoricIdentityLinkLogEventEntity;
import org.camunda.bpm.engine.impl.history.event.HistoricProcessInstanceEventEntity;
import org.camunda.bpm.engine.impl.history.event.HistoricTaskInstanceEventEntity;
import org.camunda.bpm.engine.impl.history.event.HistoricVariableUpdateEventEntity;
import org.camunda.bpm.engine.impl.history.event.HistoryEvent;
import org.camunda.bpm.engine.impl.history.handler.HistoryEventHandler;
import org.camunda.bpm.engine.impl.persistence.entity.TaskEntity;
import org.camunda.bpm.engine.impl.pvm.process.ActivityImpl;
import org.camunda.bpm.engine.impl.pvm.process.ScopeImpl;
import org.camunda.bpm.engine.impl.task.TaskDefinition;
import org.camunda.bpm.engine.impl.util.xml.Element;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The two ways the plugin learns that a task changed. Both only mark the task in the current
 * transaction's {@link TransactionFold}; the record is built later. Neither may throw: an exception
 * here would roll back the user's transaction.
 */
final class HookListeners {

  private static final Logger LOG = LoggerFactory.getLogger(HookListeners.class);

  static final List<String> TASK_EVENTS = List.of(
      TaskListener.EVENTNAME_CREATE, TaskListener.EVENTNAME_ASSIGNMENT, TaskListener.EVENTNAME_UPDATE,
      TaskListener.EVENTNAME_COMPLETE, TaskListener.EVENTNAME_DELETE);

  private HookListeners() {}

  /**
   * Adds built-in task listeners to every BPMN user task, multi-instance ones included (the engine
   * calls parseUserTask for the inner activity of a multi-instance body). Built-in listeners also
   * run when an API call asks to skip custom listeners, and they fire before the engine removes a
   * finished task's candidates and variables, which the history events do not.
   */
  static final class ParseListener extends AbstractBpmnParseListener {
    @Override
    public void parseUserTask(Element userTaskElement, ScopeImpl scope, ActivityImpl activity) {
      if (activity.getActivityBehavior() instanceof UserTaskActivityBehavior) {
        TaskDefinition definition = ((UserTaskActivityBehavior) activity.getActivityBehavior()).getTaskDefinition();
        for (String event : TASK_EVENTS) {
          definition.addBuiltInTaskListener(event, new Listener(event));
        }
      }
    }
  }

  /** One instance per event, so the event is known without relying on DelegateTask#getEventName. */
  static final class Listener implements TaskListener {
    private final String event;

    Listener(String event) {
      this.event = event;
    }

    @Override
    public void notify(DelegateTask task) {
      try {
        TransactionFold fold = TransactionFold.current();
        if (fold != null && task instanceof TaskEntity) {
          fold.onTaskListener((TaskEntity) task, event);
        }
      } catch (RuntimeException e) {
        LOG.warn("Taskpool hook: ignoring a failure while handling task {} event {}", task.getId(), event, e);
      }
    }
  }

  /**
   * Sees tasks that no parse listener reaches: standalone tasks (POST /task/create, Tasklist) and
   * CMMN tasks, plus candidate and variable changes. Task events need history level activity or
   * higher, variable events audit or higher, identity link events full (the default of the Spring
   * Boot starter and Camunda Run). Added next to the default database handler, which stays enabled.
   */
  static final class HistoryHandler implements HistoryEventHandler {
    @Override
    public void handleEvent(HistoryEvent event) {
      try {
        if (event instanceof HistoricTaskInstanceEventEntity) {
          HistoricTaskInstanceEventEntity taskEvent = (HistoricTaskInstanceEventEntity) event;
          TransactionFold fold = TransactionFold.current();
          if (fold != null && taskEvent.getTaskId() != null && taskEvent.getEventType() != null) {
            fold.onTaskHistory(taskEvent.getTaskId(), taskEvent.getEventType(), taskEvent.getDeleteReason());
          }
        } else if (event instanceof HistoricVariableUpdateEventEntity) {
          // create, update, delete, migrate (and update-detail at level full): all mean "changed".
          // Whatever set it (API, delegate, listener, correlation): the event comes from the variable.
          HistoricVariableUpdateEventEntity variableEvent = (HistoricVariableUpdateEventEntity) event;
          TransactionFold fold = TransactionFold.current();
          if (fold != null) {
            fold.onVariableHistory(variableEvent.getTaskId(), variableEvent.getProcessInstanceId(),
                variableEvent.getExecutionId());
          }
        } else if (event instanceof HistoricProcessInstanceEventEntity) {
          // Suspension and activation: an "update" with the instance's new state.
          HistoricProcessInstanceEventEntity instanceEvent = (HistoricProcessInstanceEventEntity) event;
          String state = instanceEvent.getState();
          boolean suspension = HistoricProcessInstance.STATE_SUSPENDED.equals(state)
              || HistoricProcessInstance.STATE_ACTIVE.equals(state);
          TransactionFold fold = "update".equals(instanceEvent.getEventType()) && suspension
              ? TransactionFold.current() : null;
          if (fold != null && instanceEvent.getProcessInstanceId() != null) {
            fold.onInstanceSuspension(instanceEvent.getProcessInstanceId(),
                HistoricProcessInstance.STATE_SUSPENDED.equals(state));
          }
        } else if (event instanceof HistoricIdentityLinkLogEventEntity) {
          HistoricIdentityLinkLogEventEntity linkEvent = (HistoricIdentityLinkLogEventEntity) event;
          TransactionFold fold = linkEvent.getTaskId() == null ? null : TransactionFold.current();
          if (fold != null) {
            fold.onIdentityLinkHistory(linkEvent.getTaskId(), linkEvent.getType(),
                linkEvent.getOperationType(), linkEvent.getUserId());
          }
        }
      } catch (RuntimeException e) {
        LOG.warn("Taskpool hook: ignoring a failure while handling history event {}", event.getEventType(), e);
      }
    }

    @Override
    public void handleEvents(List<HistoryEvent> events) {
      for (HistoryEvent event : events) {
        handleEvent(event);
      }
    }
  }
}
