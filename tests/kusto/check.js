// Microsoft's Kusto parser (@kusto/language-service-next, the Kusto.Language library built for JavaScript) over the
// queries tests/harness/kusto.py sends on stdin:
//   {"tables": {"<table>": [["<column>", "<string|dynamic|...>"], ...]},
//    "queries": {"<name>": {"text": "<KQL>", "analyze": true}}}
// and, on stdout, for each query: its diagnostics (syntax errors; with analyze, also names no declared table,
// column or function has, and type errors, against a database holding exactly the tables given), its result's
// columns, and what it uses (tabular operators, function calls with the kinds of their arguments, mv-expand row
// limits), so that the Python side can check what Resource Graph alerts do not support.
"use strict";

const path = require("path");
const fs = require("fs");

const modules = process.env.IMDS_SE_KUSTO_MODULES || path.join(__dirname, "node_modules");
const pkg = path.join(modules, "@kusto", "language-service-next");
global.Bridge = require(path.join(pkg, "bridge.js"));
require(path.join(pkg, "Kusto.Language.Bridge.js"));

const K = Kusto.Language;
const S = K.Symbols;
const kindName = (element) => System.Enum.getName(K.Syntax.SyntaxKind, element.Kind);
const typeName = (name) => name.charAt(0).toUpperCase() + name.slice(1);

function globalsFor(tables) {
  const symbols = Object.entries(tables).map(([table, columns]) => new S.TableSymbol.$ctor4(
    table, columns.map(([column, type]) => new S.ColumnSymbol(column, S.ScalarTypes[typeName(type)]))));
  return K.GlobalState.Default.WithDatabase(new S.DatabaseSymbol("resourcegraph", symbols));
}

function list(collection) {
  const out = [];
  for (let i = 0; i < collection.Count; i++) out.push(collection.getItem(i));
  return out;
}

function check(text, analyze, globals) {
  const code = analyze ? K.KustoCode.ParseAndAnalyze(text, globals) : K.KustoCode.Parse(text);
  const diagnostics = list(code.GetDiagnostics()).map((d) => ({
    severity: d.Severity, code: d.Code, message: d.Message, start: d.Start, length: d.Length}));
  const operators = [];
  const functions = [];
  const mvExpandLimits = [];
  code.Syntax.WalkElements((element) => {
    const kind = kindName(element);
    if (kind.endsWith("Operator") && kind !== "PipeExpression") operators.push(kind);
    if (kind === "FunctionCallExpression") {
      functions.push({name: element.Name.SimpleName,
                      args: list(element.ArgumentList.Expressions).map((e) => kindName(e.Element))});
    }
    if (kind === "MvExpandOperator") {
      const limit = element.RowLimitClause;
      mvExpandLimits.push(limit && limit.RowLimit ? limit.RowLimit.ToString(K.Syntax.IncludeTrivia.Minimal).trim() : null);
    }
  });
  const columns = [];
  const result = analyze ? code.ResultType : null;
  if (result && result.Columns) {
    for (const column of list(result.Columns)) columns.push([column.Name, column.Type.Name]);
  }
  return {diagnostics, columns, operators, functions, mvExpandLimits};
}

const input = JSON.parse(fs.readFileSync(0, "utf8"));
const globals = globalsFor(input.tables);
const out = {};
for (const [name, query] of Object.entries(input.queries)) out[name] = check(query.text, query.analyze, globals);
process.stdout.write(JSON.stringify(out));
