// One confirmation dialog for the page (a modal <dialog>: focus moves into it, Escape cancels).
// `confirmAction({title, text, confirm})` resolves true when the operator confirmed.
import { el } from "./util.js";

let dialog = null;

function build() {
  dialog = el("dialog", "confirm");
  dialog.setAttribute("aria-labelledby", "confirm-title");
  dialog.setAttribute("aria-describedby", "confirm-text");
  const form = el("form");
  form.method = "dialog";
  const title = el("h2");
  title.id = "confirm-title";
  const text = el("p");
  text.id = "confirm-text";
  const cancel = el("button", "cmd", "Cancel");
  cancel.value = "cancel";
  const ok = el("button", "cmd danger", "Confirm");
  ok.value = "confirm";
  const buttons = el("div", "buttons");
  buttons.append(cancel, ok);
  form.append(title, text, buttons);
  dialog.append(form);
  document.body.append(dialog);
}

export function confirmAction({ title, text, confirm }) {
  if (!dialog) build();
  dialog.querySelector("h2").textContent = title;
  dialog.querySelector("p").textContent = text;
  const ok = dialog.querySelector('button[value="confirm"]');
  ok.textContent = confirm;
  dialog.returnValue = "";
  dialog.showModal();
  dialog.querySelector('button[value="cancel"]').focus(); // Enter alone never confirms
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
  });
}

// Close the dialog unconfirmed (e.g. when the page loses the right to command meanwhile).
export function cancelConfirmation() {
  if (dialog && dialog.open) dialog.close("cancel");
}
