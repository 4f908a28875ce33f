/**
 * The "Copy snippet" text: Python that calls a ready model through `<server>/osire/v1`.
 */

/**
 * Python source calling `model` with the official OpenAI client from `client()`.
 *
 * `client()` (package `jupyter_osire_llm`) finds the Jupyter server that runs the kernel and its
 * credentials itself, so the snippet never holds a URL with a token or the token: it can be
 * pasted into a notebook that is shared. `baseUrl` and `token` are accepted for the callers'
 * convenience and deliberately not written.
 */
export function openaiSnippet(_baseUrl: string, model: string, _token?: string): string {
  return `from jupyter_osire_llm import client  # an OpenAI client for this Jupyter server

llm = client()
response = llm.chat.completions.create(
    model=${pyString(model)},
    messages=[{"role": "user", "content": "Hello! Who are you?"}],
)
print(response.choices[0].message.content)
`;
}

/** A Python string literal (JSON's escaping is valid Python for these values). */
function pyString(value: string): string {
  return JSON.stringify(value);
}
