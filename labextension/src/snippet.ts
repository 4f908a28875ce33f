/**
 * The "Copy OpenAI snippet" text: Python that calls a ready model through `<server>/osire/v1`.
 */

/**
 * Python source calling `model` with the official OpenAI client.
 *
 * With a token (a plain `jupyter lab`) it is written into the snippet; without one (JupyterHub
 * or cookie login) the snippet reads the hub's API token from the kernel's environment.
 */
export function openaiSnippet(baseUrl: string, model: string, token: string): string {
  const key = token
    ? pyString(token)
    : 'os.environ["JUPYTERHUB_API_TOKEN"]';
  const imports = token ? 'from openai import OpenAI' : 'import os\n\nfrom openai import OpenAI';
  return `${imports}

client = OpenAI(base_url=${pyString(baseUrl)}, api_key=${key})
response = client.chat.completions.create(
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
