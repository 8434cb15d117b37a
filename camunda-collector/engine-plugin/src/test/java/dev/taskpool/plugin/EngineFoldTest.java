package dev.taskpool.plugin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.lang.reflect.InvocationHandler;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.sql.Connection;
import java.util.ArrayList;
import java.util.Date;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.stream.Collectors;
import org.camunda.bpm.engine.ProcessEngine;
import org.camunda.bpm.engine.ProcessEngineConfiguration;
import org.camunda.bpm.engine.RuntimeService;
import org.camunda.bpm.engine.TaskService;
import org.camunda.bpm.engine.impl.cfg.AbstractProcessEnginePlugin;
import org.camunda.bpm.engine.impl.cfg.ProcessEngineConfigurationImpl;
import org.camunda.bpm.engine.impl.cfg.StandaloneInMemProcessEngineConfiguration;
import org.camunda.bpm.engine.runtime.Job;
import org.camunda.bpm.engine.task.Task;
import org.camunda.bpm.engine.variable.VariableMap;
import org.camunda.bpm.engine.variable.Variables;
import org.camunda.bpm.engine.variable.Variables.SerializationDataFormats;
import org.camunda.bpm.engine.variable.value.TypedValue;
import javax.sql.DataSource;
import org.camunda.bpm.model.bpmn.Bpmn;
import org.h2.jdbcx.JdbcDataSource;
import org.camunda.spin.plugin.impl.SpinProcessEnginePlugin;
import org.camunda.spin.plugin.variable.SpinValues;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The fold inside a real engine (in-memory H2, history full, Spin): which transactions produce
 * which records, and that a record's variables are those REST shows for the task. Records are
 * taken from the commit listener, synchronously, without the sender.
 */
class EngineFoldTest {

  private static final ObjectMapper JSON = new ObjectMapper();
  /** Every SQL statement the engine prepares. */
  private static final List<String> SQL = new CopyOnWriteArrayList<>();
  /** One element per committed transaction that produced records. */
  private static final List<List<HookSender.TaskRecord>> COMMITTED = new CopyOnWriteArrayList<>();
  private static ProcessEngine engine;
  private static RuntimeService runtime;
  private static TaskService tasks;

  @BeforeAll
  static void startEngine() {
    StandaloneInMemProcessEngineConfiguration configuration = new StandaloneInMemProcessEngineConfiguration();
    configuration.setProcessEngineName("fold-test");
    JdbcDataSource h2 = new JdbcDataSource();
    h2.setURL("jdbc:h2:mem:taskpool-fold-test;DB_CLOSE_DELAY=-1");
    configuration.setDataSource(recording(h2));
    configuration.setDatabaseSchemaUpdate(ProcessEngineConfiguration.DB_SCHEMA_UPDATE_CREATE_DROP);
    configuration.setHistory(ProcessEngineConfiguration.HISTORY_FULL);
    configuration.setJobExecutorActivate(false);
    configuration.setProcessEnginePlugins(List.of(new SpinProcessEnginePlugin(), new AbstractProcessEnginePlugin() {
      @Override
      public void preInit(ProcessEngineConfigurationImpl config) {
        TaskpoolHookPlugin.register(config, COMMITTED::add, TaskpoolHookPlugin.DEFAULT_MAX_VARIABLE_CHARS);
      }
    }));
    engine = configuration.buildProcessEngine();
    runtime = engine.getRuntimeService();
    tasks = engine.getTaskService();
    engine.getRepositoryService().createDeployment()
        .addModelInstance("simple.bpmn", Bpmn.createExecutableProcess("simple").name("Simple")
            .startEvent().userTask("review").endEvent().done())
        .addModelInstance("multi.bpmn", Bpmn.createExecutableProcess("multi")
            .startEvent().userTask("review").multiInstance().parallel().cardinality("3").multiInstanceDone()
            .endEvent().done())
        // One branch waits in a user task, the other sets a variable in a job: a transaction with no task in it.
        .addModelInstance("branches.bpmn", Bpmn.createExecutableProcess("branches")
            .startEvent().parallelGateway("fork")
            .userTask("waiting").endEvent("endWaiting")
            .moveToNode("fork").serviceTask("setter").camundaAsyncBefore()
            .camundaExpression("${execution.setVariable('fromJob', 7)}").endEvent("endSetter")
            .done())
        .deploy();
  }

  @AfterAll
  static void stopEngine() {
    if (engine != null) {
      engine.close();
    }
  }

  @BeforeEach
  void clear() {
    COMMITTED.clear();
    SQL.clear();
  }

  /** A data source that records each statement's SQL, to count queries. */
  private static DataSource recording(DataSource target) {
    InvocationHandler connections = (proxy, method, args) -> {
      Object result = invoke(target, method, args);
      if (!(result instanceof Connection)) {
        return result;
      }
      Connection connection = (Connection) result;
      return Proxy.newProxyInstance(EngineFoldTest.class.getClassLoader(), new Class<?>[] {Connection.class},
          (p, m, a) -> {
            if (m.getName().startsWith("prepare") && a != null && a.length > 0 && a[0] instanceof String) {
              SQL.add(((String) a[0]).replaceAll("\\s+", " ").trim());
            }
            return invoke(connection, m, a);
          });
    };
    return (DataSource) Proxy.newProxyInstance(EngineFoldTest.class.getClassLoader(), new Class<?>[] {DataSource.class},
        connections);
  }

  private static Object invoke(Object target, Method method, Object[] args) throws Throwable {
    try {
      return method.invoke(target, args);
    } catch (InvocationTargetException e) {
      throw e.getCause();
    }
  }

  private static long selects(String table) {
    return SQL.stream().filter(sql -> sql.regionMatches(true, 0, "select", 0, 6))
        .filter(sql -> sql.matches("(?is).*\\bfrom " + table + "\\b.*")).count();
  }

  @Test
  void processVariableChangesReachTheOpenTask() throws Exception {
    String instance = runtime.startProcessInstanceByKey("simple", "order-1", Map.of("amount", 1)).getId();
    Task task = tasks.createTaskQuery().processInstanceId(instance).singleResult();
    assertEquals("create", only(task.getId()).get("event").asText());
    assertEquals(1, only(task.getId()).at("/variables/amount/value").asInt());

    clear();
    runtime.setVariable(instance, "amount", 2);
    assertEquals(1, COMMITTED.size(), "one transaction, one record");
    JsonNode record = only(task.getId());
    assertEquals("update", record.get("event").asText());
    assertEquals("{\"type\":\"Integer\",\"value\":2}", record.at("/variables/amount").toString());
    assertEquals("order-1", record.get("businessKey").asText());

    clear();
    runtime.removeVariable(instance, "amount");
    assertTrue(only(task.getId()).get("variables").isEmpty());
  }

  @Test
  void aTaskLocalVariableShadowsAndReachesOnlyItsTask() throws Exception {
    String instance = runtime.startProcessInstanceByKey("multi", Map.of("amount", 1)).getId();
    List<Task> open = tasks.createTaskQuery().processInstanceId(instance).orderByTaskId().asc().list();
    assertEquals(3, open.size());
    assertEquals(3, records().size());

    clear();
    tasks.setVariableLocal(open.get(0).getId(), "amount", "local");
    assertEquals(Set.of(open.get(0).getId()), taskIds());
    assertEquals("{\"type\":\"String\",\"value\":\"local\"}", only(open.get(0).getId()).at("/variables/amount").toString());
    sameAsRest(open.get(0).getId());

    clear(); // a variable of one instance's execution: that instance's task only
    runtime.setVariableLocal(open.get(1).getExecutionId(), "mine", true);
    assertEquals(Set.of(open.get(1).getId()), taskIds());
    assertTrue(only(open.get(1).getId()).at("/variables/mine/value").asBoolean());

    clear(); // a process variable: every task; several are rendered from one load of the instance
    runtime.setVariable(instance, "shared", 5L);
    assertEquals(open.stream().map(Task::getId).collect(Collectors.toSet()), taskIds());
    // Ours: the open tasks, the executions and the variables of the instance (one query each; the
    // command itself read the instance's variables too), and each task's candidates.
    String sql = String.join("\n", SQL);
    assertEquals(1, selects("ACT_RU_TASK"), sql);
    assertTrue(selects("ACT_RU_VARIABLE") <= 2, sql);
    assertTrue(selects("ACT_RU_EXECUTION") <= 2, sql);
    assertEquals(3, selects("ACT_RU_IDENTITYLINK"), sql);
    for (Task task : open) {
      sameAsRest(task.getId());
      assertEquals("{\"type\":\"Long\",\"value\":5}", only(task.getId()).at("/variables/shared").toString());
    }
    assertEquals("local", only(open.get(0).getId()).at("/variables/amount/value").asText());
    assertEquals(1, only(open.get(1).getId()).at("/variables/amount/value").asInt());
    assertTrue(only(open.get(1).getId()).at("/variables/mine/value").asBoolean());
    assertTrue(only(open.get(2).getId()).at("/variables/mine").isMissingNode());

    clear(); // completing one with variables: its complete record, and updates for the others
    tasks.complete(open.get(2).getId(), Map.of("shared", 6L));
    assertEquals("complete", only(open.get(2).getId()).get("event").asText());
    assertEquals(6, only(open.get(0).getId()).at("/variables/shared/value").asInt());
    assertEquals("update", only(open.get(0).getId()).get("event").asText());

    clear();
    runtime.deleteProcessInstance(instance, "test");
    assertEquals(Set.of("delete"), records().stream().map(r -> r.get("event").asText()).collect(Collectors.toSet()));
  }

  @Test
  void aJobThatSetsAVariableUpdatesTheTaskOfTheOtherBranch() throws Exception {
    String instance = runtime.startProcessInstanceByKey("branches").getId();
    Task waiting = tasks.createTaskQuery().processInstanceId(instance).singleResult();
    Job job = engine.getManagementService().createJobQuery().processInstanceId(instance).singleResult();

    clear();
    engine.getManagementService().executeJob(job.getId());
    assertEquals(Set.of(waiting.getId()), taskIds());
    assertEquals("{\"type\":\"Long\",\"value\":7}", only(waiting.getId()).at("/variables/fromJob").toString());
  }

  @Test
  void sendsJsonXmlAndJsonObjectsWholeAndLeavesOutTheRest() throws Exception {
    String instance = runtime.startProcessInstanceByKey("simple").getId();
    String taskId = tasks.createTaskQuery().processInstanceId(instance).singleResult().getId();
    String longJson = "\"" + "x".repeat(10_000) + "\"";
    Date due = new Date(1795466405123L);

    clear();
    runtime.setVariables(instance, Variables.createVariables()
        .putValueTyped("json", SpinValues.jsonValue("{\"a\":[1,2]}").create())
        .putValueTyped("xml", SpinValues.xmlValue("<order id=\"1\"/>").create())
        .putValueTyped("list", Variables.objectValue(new ArrayList<>(List.of(1, 2)))
            .serializationDataFormat(SerializationDataFormats.JSON).create())
        .putValueTyped("javaObject", Variables.objectValue(new ArrayList<>(List.of(1)))
            .serializationDataFormat(SerializationDataFormats.JAVA).create())
        .putValueTyped("bytes", Variables.byteArrayValue(new byte[] {1, 2}))
        .putValueTyped("transient", Variables.stringValue("gone", true))
        .putValue("nan", Double.NaN)
        .putValue("short", (short) 3)
        .putValue("date", due)
        .putValue("nothing", null)
        .putValueTyped("long", SpinValues.jsonValue(longJson).create()));
    JsonNode variables = only(taskId).get("variables");
    assertEquals(new TreeSet<>(List.of("date", "json", "list", "long", "nothing", "short", "xml")), names(variables));
    assertEquals("{\"type\":\"Json\",\"value\":\"{\\\"a\\\":[1,2]}\"}", variables.get("json").toString());
    assertEquals("{\"type\":\"Xml\",\"value\":\"<order id=\\\"1\\\"/>\"}", variables.get("xml").toString());
    assertEquals("{\"type\":\"Object\",\"value\":\"[1,2]\",\"valueInfo\":{\"objectTypeName\":\"java.util.ArrayList<java.lang.Integer>\","
        + "\"serializationDataFormat\":\"application/json\"}}", variables.get("list").toString());
    assertEquals(longJson, variables.at("/long/value").asText(), "no size limit by default");
    assertEquals("{\"type\":\"Short\",\"value\":3}", variables.get("short").toString());
    assertEquals(TaskSnapshot.formatDate(due), variables.at("/date/value").asText());
    assertEquals("{\"type\":\"Null\",\"value\":null}", variables.get("nothing").toString());
  }

  @Test
  void aChangedObjectIsSentAsStoredNotAsItsJavaForm() throws Exception {
    // Set from Java: the engine keeps the deserialized list in its cache; the record needs the JSON text.
    String instance = runtime.startProcessInstanceByKey("simple", Variables.createVariables()
        .putValueTyped("list", Variables.objectValue(new ArrayList<>(List.of("a")))
            .serializationDataFormat(SerializationDataFormats.JSON).create())).getId();
    String taskId = tasks.createTaskQuery().processInstanceId(instance).singleResult().getId();
    assertEquals("[\"a\"]", only(taskId).at("/variables/list/value").asText());
  }

  @Test
  void aStandaloneTaskCarriesItsOwnVariables() throws Exception {
    Task task = tasks.newTask();
    task.setName("standalone");
    tasks.saveTask(task);
    clear();
    tasks.setVariableLocal(task.getId(), "note", "hi");
    JsonNode record = only(task.getId());
    assertEquals("update", record.get("event").asText());
    assertEquals("{\"note\":{\"type\":\"String\",\"value\":\"hi\"}}", record.get("variables").toString());
    tasks.deleteTask(task.getId(), true);
  }

  @Test
  void aTransactionWithoutOpenTasksSendsNothing() {
    String instance = runtime.startProcessInstanceByKey("simple").getId();
    tasks.complete(tasks.createTaskQuery().processInstanceId(instance).singleResult().getId());
    clear();
    String other = runtime.startProcessInstanceByKey("branches").getId();
    tasks.complete(tasks.createTaskQuery().processInstanceId(other).singleResult().getId());
    clear(); // only the job's branch is left: a variable it sets has no task to go to
    Job job = engine.getManagementService().createJobQuery().processInstanceId(other).singleResult();
    engine.getManagementService().executeJob(job.getId());
    assertTrue(COMMITTED.isEmpty());
    assertFalse(runtime.createProcessInstanceQuery().processInstanceId(other).count() > 0);
  }

  /** The record's variable names are those REST's GET /task/{id}/variables shows, minus the types not sent. */
  private static void sameAsRest(String taskId) throws Exception {
    Set<String> rest = new TreeSet<>();
    VariableMap variables = tasks.getVariablesTyped(taskId, false);
    for (String name : variables.keySet()) {
      TypedValue value = variables.getValueTyped(name);
      if (!Set.of("bytes", "file").contains(value.getType().getName())) {
        rest.add(name);
      }
    }
    assertEquals(rest, names(only(taskId).get("variables")));
  }

  private static Set<String> names(JsonNode object) {
    Set<String> names = new TreeSet<>();
    object.fieldNames().forEachRemaining(names::add);
    return names;
  }

  private static List<JsonNode> records() throws Exception {
    List<JsonNode> records = new ArrayList<>();
    for (List<HookSender.TaskRecord> transaction : COMMITTED) {
      for (HookSender.TaskRecord record : transaction) {
        records.add(JSON.readTree(record.json()));
      }
    }
    return records;
  }

  private static Set<String> taskIds() throws Exception {
    return records().stream().map(r -> r.at("/task/id").asText()).collect(Collectors.toSet());
  }

  /** The one record of the task since the last clear. */
  private static JsonNode only(String taskId) throws Exception {
    List<JsonNode> found = records().stream().filter(r -> taskId.equals(r.at("/task/id").asText())).toList();
    assertEquals(1, found.size(), "records of task " + taskId + ": " + found);
    return found.get(0);
  }
}
