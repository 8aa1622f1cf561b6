// Identity panel: who this page is logged in as and their role (the named account of the token, as
// the audit trail records it), the login form, log out.
import { connect, setToken, token } from "./connection.js";
import { store } from "./store.js";
import { badge, el } from "./util.js";

export function mount(root) {
  const who = el("span", "badge", "not logged in");
  who.id = "who";
  who.title = "who the gateway says this token is";
  const form = el("form", "login");
  form.id = "login";
  const input = el("input");
  input.id = "token";
  input.type = "password";
  input.placeholder = "token";
  input.autocomplete = "off";
  input.setAttribute("aria-label", "token");
  input.title = "the gateway's operator or viewer token (empty if RCS_AUTH=off)";
  const submit = el("button", "", "Log in");
  submit.type = "submit";
  form.append(input, submit);
  const logout = el("button", "", "Log out");
  logout.type = "button";
  logout.hidden = true;
  root.append(who, form, logout);

  // The token is checked (`GET /api/whoami`) before it is kept: a wrong one is said at once.
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const offered = input.value;
    const r = await fetch("/api/whoami", { headers: offered ? { Authorization: "Bearer " + offered } : {} })
      .catch(() => null);
    if (r && r.status === 401) {
      badge(who, "token refused", "off");
      input.select();
      return;
    }
    setToken(offered);
    input.value = "";
    connect();
  });
  logout.addEventListener("click", () => {
    setToken("");
    connect(); // refused without a token (unless RCS_AUTH=off): shows the login form
  });

  store.watch("identity", (id) => {
    if (id) badge(who, id.name === id.role ? id.role : id.name + " (" + id.role + ")", id.role === "operator" ? "op" : "");
    else who.className = "badge"; // no longer acting as anyone
    form.hidden = Boolean(id);
    logout.hidden = !id;
  });
  store.watch("connection", (c) => {
    if (c !== "refused") return;
    badge(who, token() ? "token refused" : "not logged in", "off");
    form.hidden = false;
    logout.hidden = true;
    input.focus();
  });
}
