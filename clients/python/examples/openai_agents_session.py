"""An OpenAI Agents SDK agent whose session lives in convo, run by the
SDK's own Runner with a fake model (no network but the local convo server).

    convo-local serve &                                   # in another shell
    CONVO_TOKEN=$(convo-local token --sub demo) python clients/python/examples/openai_agents_session.py
"""

import asyncio
import os

from agents import Agent, Runner, set_tracing_disabled
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import ResponseOutputMessage, ResponseOutputText

from convo_client import AsyncConvoClient
from convo_client.openai_agents import ConvoSession


class EchoModel(Model):
    """Stands in for an LLM: says how many items of history it was given."""

    async def get_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs,
                           tracing, *, previous_response_id=None, conversation_id=None, prompt=None):
        items = [input] if isinstance(input, str) else input
        text = f"I remember {len(items) - 1} earlier items."
        message = ResponseOutputMessage(id="msg", role="assistant", status="completed", type="message",
                                        content=[ResponseOutputText(text=text, type="output_text", annotations=[])])
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    def stream_response(self, *args, **kwargs):
        raise NotImplementedError


async def main(base_url: str, token: str, user_id: str = "child-42") -> list[str]:
    set_tracing_disabled(True)  # nothing leaves this machine
    async with AsyncConvoClient(base_url, token) as client:
        agent = Agent(name="Teddy", instructions="You are Teddy, a friendly bear.", model=EchoModel())
        session = ConvoSession(client=client, user_id=user_id, agent_id="teddy-7")
        answers = []
        for question in ["Tell me about volcanoes", "Are they hot?", "Thank you!"]:
            result = await Runner.run(agent, question, session=session)
            answers.append(result.final_output)
            print(f"> {question}\n{result.final_output}")
        print(f"convo holds {len(await session.get_items())} items in {await session.conversation_id()}")
        return answers


if __name__ == "__main__":
    asyncio.run(main(os.environ.get("CONVO_URL", "http://127.0.0.1:3000"), os.environ["CONVO_TOKEN"]))
