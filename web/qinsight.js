// Shows each qinsight node's verdict on the node itself: ComfyUI draws the images a node returns, but
// not its text, and a score hidden in the console is a score nobody sees.
import { app } from "../../scripts/app.js";

const REPORT = "qinsight_report";

function showReport(node, lines) {
  let widget = node.widgets?.find((w) => w.name === REPORT);
  if (!widget) {
    const area = document.createElement("textarea");
    area.readOnly = true;
    area.className = "comfy-multiline-input qinsight-report";
    area.dataset.qinsightNode = String(node.id);
    area.style.minHeight = "4.5em";
    // not saved with the workflow: the report belongs to a run, and the saved widget values stay as they were
    widget = node.addDOMWidget(REPORT, "textarea", area, {
      serialize: false,
      getValue: () => area.value,
      setValue: (value) => { area.value = value; },
    });
  }
  widget.element.value = lines.join("\n");
  node.setSize([node.size[0], Math.max(node.size[1], node.computeSize()[1])]);
  node.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "qinsight.report",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith("QInsight")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      if (output?.text?.length) showReport(this, output.text);
    };
  },
});
