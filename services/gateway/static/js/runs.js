// Runs and recordings viewer (console-review): mounted into index.html's `[data-panel="runs"]` container by dashboard.js.
// Read state with store.watch(key, fn) (store.js lists the keys), handle gateway messages with
// on(type, fn) and send with send(message) / api(path, options) (connection.js).

export function mount(root) {
  root.hidden = true; // nothing to show yet
}
