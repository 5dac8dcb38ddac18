"""A LangChain chain whose history lives in convo, with a fake model (no
network but the local convo server).

    convo-local serve &                                   # in another shell
    CONVO_TOKEN=$(convo-local token --sub demo) python clients/python/examples/langchain_history.py
"""

import os

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

from convo_client import ConvoClient
from convo_client.langchain import ConvoChatMessageHistory


def main(base_url: str, token: str, user_id: str = "child-42") -> list[str]:
    client = ConvoClient(base_url, token)
    model = GenericFakeChatModel(messages=iter([AIMessage(content=f"Answer {i}") for i in range(1, 100)]))
    prompt = ChatPromptTemplate.from_messages([
        ("system", "You are Teddy, a friendly bear."),
        MessagesPlaceholder("history"),
        ("human", "{question}"),
    ])
    chain = RunnableWithMessageHistory(
        prompt | model,
        lambda session_id: ConvoChatMessageHistory(client=client, user_id=session_id, agent_id="teddy-7"),
        input_messages_key="question",
        history_messages_key="history",
    )
    answers = []
    for question in ["Tell me about volcanoes", "Are they hot?", "Thank you!"]:
        reply = chain.invoke({"question": question}, config={"configurable": {"session_id": user_id}})
        answers.append(reply.content)
        print(f"> {question}\n{reply.content}")
    history = ConvoChatMessageHistory(client=client, user_id=user_id, agent_id="teddy-7")
    print(f"convo holds {len(history.messages)} messages in {history.conversation_id}")
    return answers


if __name__ == "__main__":
    main(os.environ.get("CONVO_URL", "http://127.0.0.1:3000"), os.environ["CONVO_TOKEN"])
